"""PKI settings as one frozen, validated object.

Read through :func:`pki_settings`, which rebuilds the object whenever a ``KEYLINE_*`` setting
changes (``override_settings`` in tests works as expected).
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
    crl_base_url: str
    ocsp_url: str
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

    def crl_url(self, slug: str) -> str:
        return f"{self.crl_base_url.rstrip('/')}/{slug}.crl"

    def ca_issuers_url(self, slug: str) -> str:
        return f"{self.ca_issuers_base_url.rstrip('/')}/{slug}.crt"


def _check_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    # RFC 5280 §4.2.1.13 / §4.2.2.1: relying parties fetch these over plain HTTP.
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be an absolute http(s) URL, got {value!r}")
    return value


def _check_ocsp_url(value: str) -> str:
    _check_url("KEYLINE_OCSP_URL", value)
    if urlsplit(value).path.strip("/") == "":
        # The responder takes every request under this path (GET puts the request in it).
        raise ImproperlyConfigured(f"KEYLINE_OCSP_URL needs a path of its own, got {value!r}")
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
    return PkiSettings(
        ca_dir=Path(settings.KEYLINE_CA_DIR),
        crl_base_url=_check_url("KEYLINE_CRL_BASE_URL", settings.KEYLINE_CRL_BASE_URL),
        ocsp_url=_check_ocsp_url(settings.KEYLINE_OCSP_URL),
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
        from pki.ocsp_http import ocsp_path

        ocsp_path.cache_clear()
