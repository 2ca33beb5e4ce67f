# Sourced by bin/run, bin/test and bin/manage (after _bootstrap.sh): the platform's own
# PostgreSQL cluster and Redis, for a machine where DATABASE_URL / REDIS_URL are not set.
#
#   services_start DIR [durable|scratch]
#       Unless DATABASE_URL is set: a PostgreSQL cluster in DIR/postgres, listening only on a
#       unix socket in DIR/run. Unless REDIS_URL is set: redis-server on DIR/run/redis.sock,
#       its data in DIR/redis. DIR and DIR/run are 0700, so only this user can connect (both
#       servers trust local connections: the directory is the access control). Exports
#       DATABASE_URL and REDIS_URL. A server already running there is used, not restarted.
#       "scratch" (bin/test) trades durability for speed: no fsync, no Redis persistence.
#   services_stop
#       Stops what services_start started (fast shutdown), nothing else.
#
# PostgreSQL refuses to run as root. As root the cluster runs in a user namespace of its own
# (unshare), as an unprivileged id that maps back to root: its files stay root's, 0700, under
# DIR, and no other account ever needs access. Where user namespaces are unavailable it runs
# as the "postgres" account instead, which then owns DIR/postgres.

SERVICES_STARTED=()

_pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$dir" ] || [ ! -x "$dir/pg_ctl" ]; then
    apt_install postgresql
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  fi
  echo "$dir"
}

# _as_pg CMD...: run a PostgreSQL program as an account it accepts (see above).
_as_pg() {
  if [ "$(id -u)" != "0" ]; then
    "$@"
  elif [ "${_PG_USERNS:-}" = "1" ]; then
    unshare --user --map-user=1000 --map-group=1000 -- "$@"
  else
    runuser -u postgres -- "$@"
  fi
}

_services_postgres() {
  local dir="$1" mode="$2" bin data sock log
  bin="$(_pg_bin)"
  data="$dir/postgres"
  sock="$dir/run"
  log="$dir/log/postgres.log"
  if [ "$(id -u)" = "0" ]; then
    if unshare --user --map-user=1000 --map-group=1000 -- true 2>/dev/null; then
      _PG_USERNS=1
    else
      _PG_USERNS=0
      mkdir -p "$data"
      chown postgres: "$data" "$sock"
      chmod 711 "$dir"  # traversable (not listable) for the postgres account
    fi
  fi
  export DATABASE_URL="postgres://postgres@/keyline?host=$sock"
  if _as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    return 0  # already running (another bin/run, bin/test or bin/manage started it)
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    echo "Creating the PostgreSQL cluster in $data..." >&2
    _as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >"$dir/log/initdb.log" 2>&1 \
      || { echo "initdb failed; see $dir/log/initdb.log" >&2; return 1; }
  fi
  local opts="-c listen_addresses='' -k $sock -c unix_socket_permissions=0700 -c max_connections=200"
  if [ "$mode" = "scratch" ]; then
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  _as_pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "$opts" start >/dev/null \
    || { echo "PostgreSQL did not start; see $log" >&2; return 1; }
  SERVICES_STARTED+=("postgres:$bin:$data")
  if ! psql -h "$sock" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='keyline'" \
    | grep -q 1; then
    createdb -h "$sock" -U postgres keyline
  fi
}

_services_redis() {
  local dir="$1" mode="$2" sock="$dir/run/redis.sock" persist
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  export REDIS_URL="unix://$sock?db=0"
  if redis-cli -s "$sock" ping >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$dir/redis"
  chmod 700 "$dir/redis"
  if [ "$mode" = "scratch" ]; then
    persist=(--save "" --appendonly no)
  else
    # Queued tasks (CRL publishing, reminders) survive a restart: append-only file, fsync/s.
    persist=(--save "" --appendonly yes --appendfsync everysec)
  fi
  redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir/redis" \
    "${persist[@]}" --daemonize yes --pidfile "$dir/run/redis.pid" \
    --logfile "$dir/log/redis.log" >/dev/null
  local _
  for _ in $(seq 1 100); do
    redis-cli -s "$sock" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  redis-cli -s "$sock" ping >/dev/null 2>&1 \
    || { echo "Redis did not start; see $dir/log/redis.log" >&2; return 1; }
  SERVICES_STARTED+=("redis:$sock")
}

services_start() {
  local dir="$1" mode="${2:-durable}"
  mkdir -p "$dir/run" "$dir/log"
  chmod 700 "$dir" "$dir/run" "$dir/log"
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  if [ -z "${DATABASE_URL:-}" ]; then
    _services_postgres "$dir" "$mode" || return 1
  fi
  if [ -z "${REDIS_URL:-}" ]; then
    _services_redis "$dir" "$mode" || return 1
  fi
}

services_stop() {
  local item kind rest
  for item in "${SERVICES_STARTED[@]}"; do
    kind="${item%%:*}"
    rest="${item#*:}"
    case "$kind" in
      postgres) _as_pg "${rest%%:*}/pg_ctl" -D "${rest#*:}" -m fast -w stop >/dev/null 2>&1 || true ;;
      redis) redis-cli -s "$rest" shutdown nosave >/dev/null 2>&1 || true ;;
    esac
  done
  SERVICES_STARTED=()
}
