# Sourced by bin/run and bin/manage: the environment of a local Keyline RFQ instance under
# var/ (KEYLINE_VAR_DIR), with its secrets (made on first use, mode 0600).
VAR="${KEYLINE_VAR_DIR:-$ROOT_DIR/var}"
export KEYLINE_VAR_DIR="$VAR"
API_PORT="${API_PORT:-8443}"
PORTAL_PORT="${PORTAL_PORT:-8444}"
PKI_PORT="${PKI_PORT:-8080}"
mkdir -p "$VAR/secrets" "$VAR/log" "$VAR/nginx" "$VAR/run"
chmod 700 "$VAR/secrets"
for secret in django-secret-key ca-passphrase ocsp-passphrase terminator-secret; do
  if [ ! -s "$VAR/secrets/$secret" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))' > "$VAR/secrets/$secret")
  fi
done
export DJANGO_SETTINGS_MODULE=portal.settings
export DJANGO_SECRET_KEY_FILE="$VAR/secrets/django-secret-key"
export KEYLINE_CA_PASSPHRASE_FILE="$VAR/secrets/ca-passphrase"
export KEYLINE_OCSP_KEY_PASSPHRASE_FILE="$VAR/secrets/ocsp-passphrase"
export KEYLINE_TERMINATOR_SECRET_FILE="$VAR/secrets/terminator-secret"
export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"
export KEYLINE_PKI_BASE_URL="${KEYLINE_PKI_BASE_URL:-http://127.0.0.1:$PKI_PORT/pki}"
if [ -z "${REDIS_URL:-}" ]; then
  export CELERY_BROKER_URL="${CELERY_BROKER_URL:-filesystem://localhost/}"
fi
export CELERY_TASK_ALWAYS_EAGER="${CELERY_TASK_ALWAYS_EAGER:-0}"
