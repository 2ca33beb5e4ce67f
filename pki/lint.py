"""Pre-issuance linting with pkilint, in-process (as Let's Encrypt's Boulder does).

The to-be-signed certificate is signed with a throwaway key and linted; only a clean result
lets the real CA key sign. Findings at WARNING and above block issuance, except pkilint's known
false positives for our names: ``pkix.invalid_uri_syntax`` on ``urn:`` SAN URIs and on URLs
whose host is a single label such as ``localhost``, and ``pkix.invalid_domain_name_syntax`` on a
single-label dNSName such as ``localhost`` (pkilint pins an old ``validators`` that accepts
only multi-label web names).
"""

import functools
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from pkilint import loader
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity, ValidatorContainer

BLOCKING = (
    ValidationFindingSeverity.FATAL,
    ValidationFindingSeverity.ERROR,
    ValidationFindingSeverity.WARNING,
)
_URI_FALSE_POSITIVE = "pkix.invalid_uri_syntax"
_DNS_FALSE_POSITIVE = "pkix.invalid_domain_name_syntax"
_SINGLE_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    severity: str
    code: str
    message: str
    node_path: str
    value: str

    def __str__(self) -> str:
        return f"{self.severity} {self.code} at {self.node_path}" + (
            f": {self.message}" if self.message else ""
        )


def is_allowed_false_positive(code: str, value: str) -> bool:
    """Exactly pkilint's false positives for our names, and nothing else."""
    if code == _DNS_FALSE_POSITIVE:
        return bool(_SINGLE_LABEL.match(value))
    if code != _URI_FALSE_POSITIVE:
        return False
    if value.startswith("urn:"):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(_SINGLE_LABEL.match(parts.hostname or ""))


@functools.cache
def _validator() -> ValidatorContainer:
    # The same validator set as pkilint's own lint_pkix_cert command.
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(
            name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
        ),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


_lock = threading.Lock()  # pkilint's validators are not documented as thread-safe


def lint_certificate_der(der: bytes) -> list[Finding]:
    """Every pkilint finding at WARNING or above that is not an allowed false positive."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "tbs")
    with _lock:
        results = _validator().validate(document.root)
    findings = []
    for result in results:
        for description in result.finding_descriptions:
            severity = description.finding.severity
            if severity not in BLOCKING:
                continue
            value = str(result.node.pdu) if result.node.pdu is not None else ""
            code = description.finding.code
            if is_allowed_false_positive(code, value):
                continue
            findings.append(
                Finding(
                    str(severity), code, description.message or "", result.node.path, value[:200]
                )
            )
    return findings
