"""System checks for the PKI configuration (``manage.py check``)."""

import stat

from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from pki.conf import pki_settings


@register("pki")
def pki_configuration(app_configs, **kwargs):
    errors = []
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
