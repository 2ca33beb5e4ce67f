# Sourced by bin/run and bin/test: make sure the machine has what the project needs and that
# .venv holds the pinned requirements. Installs Debian/Ubuntu packages when run as root;
# otherwise says which command to run.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"

apt_install() {
  # apt_install PACKAGE... : install Debian packages if we may, else explain and stop.
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing $* (apt-get)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "Missing system packages: $*. Install them with: sudo apt-get install -y $*" >&2
    exit 1
  fi
}

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Python 3.11 or newer is needed; $("$PYTHON" --version) found. Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
command -v openssl >/dev/null 2>&1 || apt_install openssl

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    py_version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt_install "python${py_version}-venv"
    "$PYTHON" -m venv .venv
  fi
fi

# requirements_install FILE: pip install when FILE (or what it includes) changed.
requirements_install() {
  local stamp=".venv/.installed-$(basename "$1")"
  local digest
  digest="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    echo "Installing Python requirements from $1..." >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$1" >&2
    echo "$digest" > "$stamp"
  fi
}
