"""System checks for the PKI configuration (``manage.py check``)."""

import stat
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from pki.conf import pki_settings, url_path
from pki.models import CertificateAuthority


@register("pki")
def pki_configuration(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    try:
        conf = pki_settings()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="pki.E001")]
    keys = conf.ca_dir / "keys"
    if keys.is_dir():
        for path in sorted(keys.glob("*.key.pem")):
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode != 0o600:
                errors.append(
                    Error(
                        f"CA key file {path} has mode {mode:o}; it must be 600.",
                        hint=f"chmod 600 {path}",
                        id="pki.E002",
                    )
                )
    for url in (conf.crl_base_url, conf.ocsp_url, conf.ca_issuers_base_url):
        if url.startswith("https://"):
            errors.append(
                Warning(
                    f"{url} uses https: relying parties fetching CRLs and OCSP over TLS may "
                    "need revocation data to validate the server (RFC 5280 §4.2.1.13).",
                    id="pki.W001",
                )
            )
    return errors


@register(Tags.database)
def ca_ocsp_urls_served(
    app_configs: Sequence[AppConfig] | None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Each active CA's OCSP URL is on the path this deployment answers at (``pki.W002``).

    The CA rows decide what certificates carry; KEYLINE_OCSP_URL decides where the responder
    and nginx listen. ``set_ca_urls`` keeps them together, but moving the setting afterwards
    would leave new certificates naming a path nobody answers. A database check: run by
    ``migrate`` and ``check --database default``, and silent before the tables exist.
    """
    if "default" not in (databases or ()):
        return []
    try:
        served = pki_settings().ocsp_path
        rows = list(
            CertificateAuthority.objects.filter(is_active=True)
            .exclude(ocsp_url="")
            .values_list("slug", "ocsp_url")
        )
    except (ImproperlyConfigured, DatabaseError):
        return []  # pki.E001 reports the settings; migrate creates the columns
    return [
        Warning(
            f"CA {slug} writes the OCSP URL {url} into its certificates, but the responder "
            f"answers at {served} (the path of KEYLINE_OCSP_URL).",
            hint=f"manage.py set_ca_urls --ca all --ocsp-url <URL with the path {served}>",
            id="pki.W002",
        )
        for slug, url in rows
        if url_path(url) != served
    ]
