"""OpenAPI description of how callers authenticate: mutual TLS (OpenAPI 3.1 ``mutualTLS``).
The headers the terminator forwards are internal and never part of the public contract."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class TerminatorCertificateScheme(OpenApiAuthenticationExtension):
    target_class = "pki.authentication.TerminatorCertificateAuthentication"
    name = "clientCertificate"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "mutualTLS",
            "description": (
                "A client certificate issued by the venue's CA, presented in the TLS handshake "
                "to the API endpoint. The certificate identifies the participant and its firm."
            ),
        }
