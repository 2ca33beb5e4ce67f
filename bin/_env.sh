# Sourced by bin/run and bin/manage: the environment of a local Keyline RFQ instance under
# var/ (KEYLINE_VAR_DIR): its secrets (made on first use), its own PostgreSQL and Redis (unless
# DATABASE_URL / REDIS_URL say otherwise), its public URLs. Everything under var/ is readable
# by its owner only: var/ is 0700 and files are created with umask 077.
umask 077
VAR="${KEYLINE_VAR_DIR:-$ROOT_DIR/var}"
export KEYLINE_VAR_DIR="$VAR"
API_PORT="${API_PORT:-8443}"
PORTAL_PORT="${PORTAL_PORT:-8444}"
PKI_PORT="${PKI_PORT:-8080}"
mkdir -p "$VAR/secrets" "$VAR/log" "$VAR/nginx" "$VAR/run" "$VAR/mail"
chmod 700 "$VAR" "$VAR/secrets" "$VAR/log" "$VAR/nginx" "$VAR/run" "$VAR/mail"
for secret in django-secret-key ca-passphrase ocsp-passphrase terminator-secret; do
  if [ ! -s "$VAR/secrets/$secret" ]; then
    .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))' > "$VAR/secrets/$secret"
  fi
done
export DJANGO_SETTINGS_MODULE=keyline.settings
export DJANGO_SECRET_KEY_FILE="$VAR/secrets/django-secret-key"
export KEYLINE_CA_PASSPHRASE_FILE="$VAR/secrets/ca-passphrase"
export KEYLINE_OCSP_KEY_PASSPHRASE_FILE="$VAR/secrets/ocsp-passphrase"
export KEYLINE_TERMINATOR_SECRET_FILE="$VAR/secrets/terminator-secret"
export DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"
# The three public addresses; every link, e-mail and curl line the platform prints follows them.
# The portal by host name: a browser's WebAuthn (passkeys) accepts no IP address as the site.
export KEYLINE_PORTAL_URL="${KEYLINE_PORTAL_URL:-https://localhost:$PORTAL_PORT}"
export KEYLINE_API_URL="${KEYLINE_API_URL:-https://127.0.0.1:$API_PORT}"
export KEYLINE_PKI_URL="${KEYLINE_PKI_URL:-${KEYLINE_PKI_BASE_URL:-http://127.0.0.1:$PKI_PORT/pki}}"
# E-mails (case links, call-back codes, invitations, reminders) are files in var/mail/.
export DJANGO_EMAIL_BACKEND="${DJANGO_EMAIL_BACKEND:-django.core.mail.backends.filebased.EmailBackend}"
export DJANGO_EMAIL_FILE_PATH="${DJANGO_EMAIL_FILE_PATH:-$VAR/mail}"
export CELERY_TASK_ALWAYS_EAGER="${CELERY_TASK_ALWAYS_EAGER:-0}"
# Files an earlier version left readable by others.
chmod -R go-rwx "$VAR" 2>/dev/null || true
source "$ROOT_DIR/bin/_services.sh"
