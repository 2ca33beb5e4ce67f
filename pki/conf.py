"""PKI settings as one frozen, validated object.

Read through :func:`pki_settings`, which rebuilds the object whenever a ``KEYLINE_*`` setting
changes (``override_settings`` in tests works as expected).

The CRL, OCSP and caIssuers URL settings are defaults, not what certificates carry: ``init_ca``
records them on each CA row and every signature reads the issuing CA's row
(``pki.services.ca_urls_plan`` changes them), so no signing process's environment can put
another address into a certificate. The OCSP URL's path is also where this deployment's
responder listens (``ocsp_path``).
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class PkiSettings:
    ca_dir: Path
    # Defaults that init_ca records on new CA rows; signing reads the issuing CA's row.
    crl_base_url: str
    ocsp_url: str
    ocsp_path: str  # where the responder answers (keyline.wsgi, pki.ocsp_asgi, nginx)
    ca_issuers_base_url: str
    organization: str
    country: str
    client_cert_days: int
    server_cert_days: int
    ocsp_responder_days: int
    lint_before_signing: bool
    crl_validity_hours: int
    crl_max_age_hours: int
    crl_reload_command: str
    ocsp_validity_seconds: int
    redis_url: str


MAX_URL_LENGTH = 400  # CertificateAuthority's URL columns


def url_problem(value: str, *, own_path: bool = False) -> str | None:
    """Why ``value`` cannot be a distribution URL (or the base of one), or None when it can.

    Shared by the settings and ``set_ca_urls``, so a URL refused in one is refused in the
    other. Certificates hold these as IA5String URIs that relying parties fetch over plain
    HTTP (RFC 5280 §4.2.1.13, §4.2.2.1): ASCII only, an absolute http(s) URL with a host, no
    credentials, and nothing after the path, since bases get ``/<slug>.crl`` appended.
    ``own_path``: the OCSP URL, whose path the responder takes every request under (a GET
    carries the request after it), so it cannot be the site's root.
    """
    if not value.isascii() or any(c.isspace() or not c.isprintable() for c in value):
        return "must be ASCII without spaces or control characters"
    if len(value) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(value)
    except ValueError:
        return "is not a URL"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return "has a port that is not one (1-65535)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        return "must not have a query or a fragment"
    if own_path and parts.path.strip("/") == "":
        return "needs a path of its own"
    return None


def url_path(value: str) -> str:
    """The path of an OCSP URL as the responder matches it (no trailing slash)."""
    return urlsplit(value).path.rstrip("/") or "/"


def _check_url(name: str, value: str, *, own_path: bool = False) -> str:
    if problem := url_problem(value, own_path=own_path):
        raise ImproperlyConfigured(f"{name} {problem}, got {value!r}")
    return value


@functools.cache
def pki_settings() -> PkiSettings:
    days = {
        "client_cert_days": settings.KEYLINE_CLIENT_CERT_DAYS,
        "server_cert_days": settings.KEYLINE_SERVER_CERT_DAYS,
        "ocsp_responder_days": settings.KEYLINE_OCSP_RESPONDER_DAYS,
    }
    for name, value in days.items():
        if not 1 <= value <= 825:
            raise ImproperlyConfigured(f"KEYLINE_{name.upper()} must be 1..825, got {value}")
    crl_validity_hours = settings.KEYLINE_CRL_VALIDITY_HOURS
    if not 1 <= crl_validity_hours <= 7 * 24:
        # RFC 5280 requires nextUpdate; this platform promises at most 7 days.
        raise ImproperlyConfigured(
            f"KEYLINE_CRL_VALIDITY_HOURS must be 1..168, got {crl_validity_hours}"
        )
    ocsp_validity = settings.KEYLINE_OCSP_VALIDITY_SECONDS
    if not 600 <= ocsp_validity <= 7 * 86400:
        raise ImproperlyConfigured(
            f"KEYLINE_OCSP_VALIDITY_SECONDS must be 600..604800, got {ocsp_validity}"
        )
    ocsp_url = _check_url("KEYLINE_OCSP_URL", settings.KEYLINE_OCSP_URL, own_path=True)
    return PkiSettings(
        ca_dir=Path(settings.KEYLINE_CA_DIR),
        crl_base_url=_check_url("KEYLINE_CRL_BASE_URL", settings.KEYLINE_CRL_BASE_URL),
        ocsp_url=ocsp_url,
        ocsp_path=url_path(ocsp_url),
        ca_issuers_base_url=_check_url(
            "KEYLINE_CA_ISSUERS_BASE_URL", settings.KEYLINE_CA_ISSUERS_BASE_URL
        ),
        organization=settings.KEYLINE_CA_ORGANIZATION,
        country=settings.KEYLINE_CA_COUNTRY,
        lint_before_signing=settings.KEYLINE_LINT_BEFORE_SIGNING,
        crl_validity_hours=crl_validity_hours,
        crl_max_age_hours=settings.KEYLINE_CRL_MAX_AGE_HOURS,
        crl_reload_command=settings.KEYLINE_CRL_RELOAD_COMMAND,
        ocsp_validity_seconds=ocsp_validity,
        redis_url=settings.REDIS_URL,
        **days,
    )


def _passphrase(setting: str, what: str) -> bytes:
    value, path = getattr(settings, setting), getattr(settings, f"{setting}_FILE")
    if value and path:
        raise ImproperlyConfigured(f"set {setting} or {setting}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{setting}_FILE is not readable: {exc}") from exc
    if not value:
        raise ImproperlyConfigured(f"the {what} is not set ({setting} or {setting}_FILE)")
    if len(value) < 16:
        raise ImproperlyConfigured(f"the {what} must be at least 16 characters")
    return value.encode()


def ca_passphrase() -> bytes:
    """The CA key passphrase from ``KEYLINE_CA_PASSPHRASE`` or ``KEYLINE_CA_PASSPHRASE_FILE``.

    Resolved only where a CA key is loaded, so web processes need not have it. Fails closed:
    no passphrase, both sources, or a short one is an error, never an unencrypted key.
    """
    return _passphrase("KEYLINE_CA_PASSPHRASE", "CA passphrase")


def ocsp_key_passphrase() -> bytes:
    """The OCSP delegate key's passphrase (``KEYLINE_OCSP_KEY_PASSPHRASE[_FILE]``): what an
    OCSP responder process holds instead of the CA passphrase."""
    return _passphrase("KEYLINE_OCSP_KEY_PASSPHRASE", "OCSP delegate key passphrase")


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("KEYLINE_") or setting == "REDIS_URL":
        pki_settings.cache_clear()
