"""Keyline RFQ settings, read from the environment (django-environ).

The module fails closed: without ``DJANGO_DEBUG=1`` a ``DJANGO_SECRET_KEY`` (or
``DJANGO_SECRET_KEY_FILE``) and ``DJANGO_ALLOWED_HOSTS`` are required. Defaults suit one
machine with nothing installed (a migrations check, a quick shell): SQLite under ``var/`` and
Celery tasks run eagerly in-process. The platform itself runs on PostgreSQL and Redis, from
``DATABASE_URL`` and ``REDIS_URL``: ``bin/run`` and ``bin/test`` start private ones under ``var/``
when those are unset (bin/_services.sh). A ``.env`` file at the
project root is read only if it exists; see ``.env.example`` for every variable.
"""

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")
# Everything a running instance writes: database (SQLite), CA, secrets, sockets, logs.
VAR_DIR = Path(env.str("KEYLINE_VAR_DIR", default=str(BASE_DIR / "var")))


def _secret(name: str, default: str = "") -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (not both)."""
    value = env.str(name, default="")
    path = env.str(f"{name}_FILE", default="")
    if value and path:
        raise ImproperlyConfigured(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} is not readable: {exc}") from exc
    return value or default


DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = _secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is required")
    SECRET_KEY = "insecure-debug-only-key-never-used-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required when DJANGO_DEBUG is off")

# The public addresses of the three faces of the platform. Every link, e-mail, page and curl
# recipe is derived from these (bin/run sets them from its ports), as are the CSRF trusted
# origins below: the portal's own origin is always trusted.
KEYLINE_PORTAL_URL = env.str("KEYLINE_PORTAL_URL", default="https://localhost:8444").rstrip("/")
KEYLINE_API_URL = env.str("KEYLINE_API_URL", default="https://127.0.0.1:8443").rstrip("/")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


CSRF_TRUSTED_ORIGINS = [
    _origin(KEYLINE_PORTAL_URL),
    *env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[]),
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "kernel.apps.KernelConfig",
    "portal.apps.PortalConfig",
    "pki.apps.PkiConfig",
    "rfq.apps.RfqConfig",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp_webauthn",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After messages: it tells the signed-out officer why.
    "portal.middleware.OfficerIdleTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Counts failures per user name and address, and refuses a locked-out login first.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Portal logins (never the API): 5 failures lock the user name for an hour (whatever address
# they come from), and an address that failed 5 times is locked for every user name.
# The address is the one nginx saw: it sets X-Real-IP on every request it forwards (replacing a
# client's copy), and the app is reachable only through nginx (a unix socket). django-ipware
# reads that header alone; X-Forwarded-For and the like, which a client can write, are ignored.
# Without nginx (tests, runserver) REMOTE_ADDR is the client.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_REAL_IP", "REMOTE_ADDR")
AXES_FAILURE_LIMIT = env.int("KEYLINE_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# Officers are signed out after this much inactivity (portal.middleware).
KEYLINE_OFFICER_IDLE_SECONDS = env.int("KEYLINE_OFFICER_IDLE_SECONDS", default=15 * 60)
OTP_TOTP_ISSUER = "Keyline RFQ"
# After n wrong codes in a row, the next is not even checked for 0.1 * 2^(n-1) s: a typo
# retyped at human speed goes through (0.1 s, 0.2 s, 0.4 s ...), a guesser waits 51 s after
# ten, an hour after sixteen (django-otp's default factor of 1 made a person wait).
OTP_TOTP_THROTTLE_FACTOR = 0.1

# Passkeys (WebAuthn, django-otp-webauthn) as the other second factor, never instead of the
# password. A passkey is bound to the portal's host name (the relying party ID): browsers refuse
# an IP address there, and changing the name later orphans every registered passkey.
OTP_WEBAUTHN_RP_ID = urlsplit(KEYLINE_PORTAL_URL).hostname
OTP_WEBAUTHN_RP_NAME = "Keyline RFQ"
OTP_WEBAUTHN_ALLOWED_ORIGINS = [_origin(KEYLINE_PORTAL_URL)]
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
# py_webauthn's failures (a bad signature, a wrong origin) in the portal's log.
OTP_WEBAUTHN_EXCEPTION_LOGGER_NAME = "portal.passkeys"

ROOT_URLCONF = "keyline.urls"
WSGI_APPLICATION = "keyline.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'keyline.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Only for tooling on a bare machine (the platform runs on PostgreSQL). Still: WAL so readers
    # never block the writer, BEGIN IMMEDIATE so a writer takes the lock up front instead of
    # failing "database is locked" halfway, a busy timeout, and a file only its owner can read
    # (it would hold sessions and second-factor seeds).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # The file is made private when a connection opens it (kernel.apps).
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# TYPEHINT NOTE: django-environ annotates the default as its Path, but wraps whatever value it
# gets (the variable's or the default) in its Path, so a str works.
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))  # type: ignore[arg-type]
# collectstatic names each file by its content hash, so nginx may let browsers cache it for a
# year. Off where nothing was collected (the test suite, DJANGO_DEBUG).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
            if env.bool("KEYLINE_STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:home"

# --- security headers and cookies -------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^pki/"]  # CRL/OCSP/caIssuers are plain http by RFC 5280 convention
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading is a commitment (removal takes months): on by default in production, off in DEBUG.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- REST framework ------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Identity on the API comes only from the client certificate nginx verified
    # (docs/architecture.md, the trust contract).
    "DEFAULT_AUTHENTICATION_CLASSES": ["pki.authentication.TerminatorCertificateAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["kernel.renderers.OrjsonRenderer"],
    "DEFAULT_PARSER_CLASSES": ["kernel.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "kernel.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Per certificate (rfq/throttling.py); a refusal is 429 with Retry-After. The bench raises
    # them with KEYLINE_API_RATE_SCALE.
    "DEFAULT_THROTTLE_RATES": {
        scope: f"{int(rate * env.float('KEYLINE_API_RATE_SCALE', default=1.0))}/s"
        for scope, rate in {
            "read": 50,  # lists, gets, the event feed
            "rfq_create": 10,
            "quote": 50,  # create, replace, cancel, cancel-all
            "accept": 10,
            "cancel": 20,
        }.items()
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Keyline RFQ API",
    "DESCRIPTION": (
        "Request for quote over mutual TLS. Every call presents a client certificate issued by "
        "the venue's CA; the certificate is the identity. Decimals are strings, times are UTC "
        "ISO 8601, and every error is `{code, message, request_id, details}`."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",  # for the mutualTLS security scheme
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SideEnum": "rfq.models.Side",
        "RfqStateEnum": "rfq.models.Rfq.State",
        "QuoteStateEnum": "rfq.models.Quote.State",
        "EventTypeEnum": "rfq.models.EventType",
        "DeskRoleEnum": "rfq.models.Audience",
        "InstrumentKindEnum": "rfq.models.Instrument.Kind",
        "FirmRoleEnum": "kernel.models.Firm.Role",
        "ParticipantRoleEnum": "kernel.models.Participant.Role",
    },
}

# --- RFQ ---------------------------------------------------------------------------------------
KEYLINE_RFQ = {
    # Server-bounded lifetimes, in seconds (RFQs 5 s - 10 min; quotes 10-120 s as OKX and
    # Bybit do, and never past their RFQ).
    "RFQ_EXPIRY_DEFAULT": env.int("KEYLINE_RFQ_EXPIRY_DEFAULT", default=300),
    "RFQ_EXPIRY_MIN": env.int("KEYLINE_RFQ_EXPIRY_MIN", default=5),
    "RFQ_EXPIRY_MAX": env.int("KEYLINE_RFQ_EXPIRY_MAX", default=600),
    "QUOTE_EXPIRY_DEFAULT": 60,
    "QUOTE_EXPIRY_MIN": env.int("KEYLINE_QUOTE_EXPIRY_MIN", default=10),
    "QUOTE_EXPIRY_MAX": 120,
    "MAX_LEGS": 20,
    # The longest an events/ long-poll holds its (threaded) worker.
    "EVENTS_MAX_WAIT": env.int("KEYLINE_EVENTS_MAX_WAIT", default=25),
    # The life of one events/stream/ connection (SSE clients reconnect by themselves).
    "EVENTS_STREAM_SECONDS": env.int("KEYLINE_EVENTS_STREAM_SECONDS", default=300),
    # Concurrent events/stream/ connections per certificate (each holds an event-pool thread).
    "EVENTS_STREAMS_PER_CERTIFICATE": env.int("KEYLINE_EVENTS_STREAMS_PER_CERTIFICATE", default=2),
    # Lists (rfqs/, quotes/, trades/): ?limit= default and maximum.
    "PAGE_SIZE_DEFAULT": 50,
    "PAGE_SIZE_MAX": 200,
    # events/: events per answer (?limit= default and maximum); a stream sends the default.
    "EVENTS_LIMIT_DEFAULT": 100,
    "EVENTS_LIMIT_MAX": 500,
    # Counterparties one RFQ may name.
    "MAX_COUNTERPARTIES": 100,
}

# The nginx terminator sets these headers on every request it forwards (proxy_set_header, so a
# client's own copies are replaced, and an empty value drops the header). The app trusts the
# certificate headers only with the shared secret, compared in constant time.
# Empty: every API request is refused (TERMINATOR_NOT_CONFIGURED).
KEYLINE_TERMINATOR_SECRET = _secret("KEYLINE_TERMINATOR_SECRET")
KEYLINE_HEADER_SECRET = "X-Keyline-Terminator"  # noqa: S105 - a header name
KEYLINE_HEADER_VERIFY = "X-Keyline-Client-Verify"
KEYLINE_HEADER_CERT = "X-Keyline-Client-Cert"

# --- cache (the per-certificate trust decision lives here; Redis in production) -----------
REDIS_URL = env.str("REDIS_URL", default="")
# A prefix for pub/sub channels (kernel.redis.channel): they are per Redis server, not per
# database, so deployments (or test processes) sharing one server set one each.
KEYLINE_REDIS_NAMESPACE = env.str("KEYLINE_REDIS_NAMESPACE", default="")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        # Without Redis, still one cache for every process (web, worker): a revocation must
        # reach the trust decision cached by another process. `createcachetable` makes it.
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "keyline_cache"}
    )
}

# --- Celery ----------------------------------------------------------------------------------
# The broker is Redis. Without one the tasks run eagerly in the calling process (unit tests,
# tooling). Tasks that need a CA key are routed to the "signing" queue, which only the
# key-holding worker consumes: web processes never load a CA key.


def _broker_url(redis_url: str) -> str:
    """kombu spells a unix-socket Redis ``redis+socket:///path?virtual_host=N``, redis-py
    ``unix:///path?db=N``: one REDIS_URL serves both."""
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


CELERY_BROKER_URL = env.str(
    "CELERY_BROKER_URL", default=_broker_url(REDIS_URL) if REDIS_URL else "memory://localhost/"
)
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL.startswith("memory://")
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"pki.tasks.*": {"queue": "signing"}}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # Revoke, as superseded, certificates renewed by EST whose grace period is over (pki.est).
    "est-supersede": {"task": "pki.tasks.est_supersede_task", "schedule": crontab(minute="*/10")},
    # Renew the OCSP delegate well before it expires; the task does nothing if not due.
    # Every 6 hours (https://crontab.guru/#17_*/6_*_*_*).
    "ocsp-responder-renew": {
        "task": "pki.tasks.ocsp_responder_renew_task",
        "schedule": crontab(minute="17", hour="*/6"),
    },
    # Rebuild every CRL hourly, far inside their 7-day nextUpdate: nginx refuses every client
    # once a CRL in its bundle is past nextUpdate, so a stalled rebuild must be seen (and
    # alerted on, /pki/health/) days before it becomes an outage.
    "crl-publish": {"task": "pki.tasks.crl_publish_task", "schedule": crontab(minute="7")},
    # Re-sign the pre-signed OCSP responses well before they go stale (see KEYLINE_OCSP_*).
    "ocsp-presign": {"task": "pki.tasks.ocsp_presign_task", "schedule": crontab(minute="*/30")},
    # Close RFQs and quotes past their time. Accept checks the time itself, so this only
    # makes the state (and the makers' feeds) say so promptly: every 5 seconds.
    "rfq-expire": {"task": "rfq.tasks.rfq_expire_task", "schedule": 5.0},
    # Recompute the audit chain hourly and keep the verdict for the officers' audit page
    # (https://crontab.guru/#23_*_*_*_*).
    "audit-verify": {"task": "kernel.tasks.audit_verify_task", "schedule": crontab(minute="23")},
    # Certificate expiry reminders, daily at 06:30 UTC (https://crontab.guru/#30_6_*_*_*);
    # exactly once per certificate and threshold however often it runs.
    "expiry-reminders": {
        "task": "portal.tasks.expiry_reminders_task",
        "schedule": crontab(minute="30", hour="6"),
    },
}

# --- e-mail --------------------------------------------------------------------------------
EMAIL_BACKEND = env.str(
    "DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="onboarding@keyline.invalid")
# SMTP (DJANGO_EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend); tests use locmem.
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("DJANGO_EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("DJANGO_EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = _secret("DJANGO_EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env.bool("DJANGO_EMAIL_USE_TLS", default=True)
EMAIL_TIMEOUT = 20
# DJANGO_EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend writes each message as a
# file here (bin/run: var/mail/).
EMAIL_FILE_PATH = env.str("DJANGO_EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))

# --- onboarding portal ------------------------------------------------------------------------
# Sign participants' CSRs at once when their firm is approved; otherwise an officer decides.
KEYLINE_AUTO_SIGN = env.bool("KEYLINE_AUTO_SIGN", default=False)
# How long a web request waits for the signing worker to sign what it asked for (pki.signing)
# before it answers "queued" and lets the worker finish on its own.
KEYLINE_SIGNING_WAIT_SECONDS = env.float("KEYLINE_SIGNING_WAIT_SECONDS", default=8.0)
# The audit chainer (manage.py chain_audit --follow) chains records within about 0.1 s; health
# (/pki/health/, the officers' dashboard) turns "degraded" when a record has waited longer.
KEYLINE_AUDIT_MAX_LAG = env.float("KEYLINE_AUDIT_MAX_LAG", default=5.0)
# Case documents (kept by SHA-256, 0600, never under a served path).
KEYLINE_DOCUMENTS_DIR = env.str("KEYLINE_DOCUMENTS_DIR", default=str(VAR_DIR / "documents"))
# Uploads: documents up to 10 MB (checked again by the service); nothing else is large.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Expiry reminders: days before notAfter (portal.tasks.expiry_reminders_task, daily).
KEYLINE_REMINDER_DAYS = (30, 14, 7, 1)

# --- PKI (validated in pki/conf.py, checked by pki/checks.py) -------------------------------
# The PKI's public address (plain http by RFC 5280 convention): the base of the CRL, OCSP and
# caIssuers URLs that init_ca records on each CA (certificates carry the CA's URLs, never the
# signing process's), and of the links the portal shows. KEYLINE_PKI_BASE_URL is its old name.
KEYLINE_PKI_URL = env.str(
    "KEYLINE_PKI_URL",
    default=env.str("KEYLINE_PKI_BASE_URL", default="http://127.0.0.1:8080/pki"),
).rstrip("/")
KEYLINE_PKI_BASE_URL = KEYLINE_PKI_URL
KEYLINE_CRL_BASE_URL = env.str("KEYLINE_CRL_BASE_URL", default=f"{KEYLINE_PKI_BASE_URL}/crl")
KEYLINE_OCSP_URL = env.str("KEYLINE_OCSP_URL", default=f"{KEYLINE_PKI_BASE_URL}/ocsp")
KEYLINE_CA_ISSUERS_BASE_URL = env.str(
    "KEYLINE_CA_ISSUERS_BASE_URL", default=f"{KEYLINE_PKI_BASE_URL}/ca"
)
KEYLINE_CA_DIR = env.str("KEYLINE_CA_DIR", default=str(VAR_DIR / "ca"))
# The passphrase is resolved only where a CA key is loaded (pki.keystore), so web processes
# can run without it.
KEYLINE_CA_PASSPHRASE = env.str("KEYLINE_CA_PASSPHRASE", default="")
KEYLINE_CA_PASSPHRASE_FILE = env.str("KEYLINE_CA_PASSPHRASE_FILE", default="")
# The OCSP delegate's key has a passphrase of its own: the responder process needs it, and
# must not hold the one that opens the CA keys.
KEYLINE_OCSP_KEY_PASSPHRASE = env.str("KEYLINE_OCSP_KEY_PASSPHRASE", default="")
KEYLINE_OCSP_KEY_PASSPHRASE_FILE = env.str("KEYLINE_OCSP_KEY_PASSPHRASE_FILE", default="")
KEYLINE_CA_ORGANIZATION = env.str("KEYLINE_CA_ORGANIZATION", default="Keyline RFQ")
KEYLINE_CA_COUNTRY = env.str("KEYLINE_CA_COUNTRY", default="GB")
KEYLINE_CLIENT_CERT_DAYS = env.int("KEYLINE_CLIENT_CERT_DAYS", default=90)
# EST (RFC 7030, pki.est): how long an enrollment token lives; how long a certificate renewed
# by EST stays valid once its successor is issued, if the successor is not used before (its
# first use revokes it as superseded at once); the Retry-After of a request that waits.
KEYLINE_EST_TOKEN_HOURS = env.int("KEYLINE_EST_TOKEN_HOURS", default=72)
KEYLINE_EST_SUPERSEDE_GRACE_HOURS = env.int("KEYLINE_EST_SUPERSEDE_GRACE_HOURS", default=72)
KEYLINE_EST_RETRY_AFTER_SECONDS = env.int("KEYLINE_EST_RETRY_AFTER_SECONDS", default=60)
KEYLINE_SERVER_CERT_DAYS = env.int("KEYLINE_SERVER_CERT_DAYS", default=90)
KEYLINE_OCSP_RESPONDER_DAYS = env.int("KEYLINE_OCSP_RESPONDER_DAYS", default=7)
KEYLINE_LINT_BEFORE_SIGNING = env.bool("KEYLINE_LINT_BEFORE_SIGNING", default=True)
# CRLs: nextUpdate = thisUpdate + this (RFC 5280 requires nextUpdate; at most 7 days here).
KEYLINE_CRL_VALIDITY_HOURS = env.int("KEYLINE_CRL_VALIDITY_HOURS", default=7 * 24)
# /pki/health/ reports a CRL as stale when it is older than this (it is rebuilt hourly).
KEYLINE_CRL_MAX_AGE_HOURS = env.int("KEYLINE_CRL_MAX_AGE_HOURS", default=24)
# After every publish the PEM bundle (<CA_DIR>/crl/bundle.pem, one CRL per CA, for nginx's
# ssl_crl) is rewritten atomically and this command runs, e.g. "nginx -p /srv/nginx -s reload"
# (nginx reads ssl_crl only at start and reload). Empty: no reload.
KEYLINE_CRL_RELOAD_COMMAND = env.str("KEYLINE_CRL_RELOAD_COMMAND", default="")
# OCSP responses: nextUpdate = thisUpdate + validity; pre-signed responses are kept in the
# cache for half of it and re-signed every 30 minutes (beat), and dropped at once on every
# status change, so a cached answer is never older than a status change.
KEYLINE_OCSP_VALIDITY_SECONDS = env.int("KEYLINE_OCSP_VALIDITY_SECONDS", default=4 * 3600)

# pki_cert_revoked_crl_idx carries INCLUDE columns for PostgreSQL's index-only scan; SQLite
# keeps the index without them, which is all it needs.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}
