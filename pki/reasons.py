"""Revocation reasons: the names an operator or a form may use, and the RFC 5280 §5.3.1 code
each one is written as.

Their own module, low in ``pki``, because both halves of revocation data need them:
``pki.revocation`` when it revokes and builds CRLs, ``pki.ocsp`` when it signs a ``revoked``
answer. Imports only the models.
"""

from cryptography import x509

from kernel.errors import Invalid
from pki.models import Certificate

Reason = Certificate.Reason

# RFC 5280 §5.3.1 names (as openssl and the RFC spell them) and ours, for commands and forms.
REASON_NAMES = {
    "unspecified": Reason.UNSPECIFIED,
    "keyCompromise": Reason.KEY_COMPROMISE,
    "affiliationChanged": Reason.AFFILIATION_CHANGED,
    "superseded": Reason.SUPERSEDED,
    "cessationOfOperation": Reason.CESSATION_OF_OPERATION,
    "privilegeWithdrawn": Reason.PRIVILEGE_WITHDRAWN,
} | {reason.value: reason for reason in Reason}

# "unspecified" is never written as a reason code (RFC 5280 §5.3.1: omit it instead).
REASON_FLAGS: dict[str, x509.ReasonFlags | None] = {
    Reason.UNSPECIFIED: None,
    Reason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    Reason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    Reason.SUPERSEDED: x509.ReasonFlags.superseded,
    Reason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    Reason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
}


def reason_from_name(name: str) -> str:
    try:
        return REASON_NAMES[name]
    except KeyError:
        choices = ", ".join(n for n in REASON_NAMES if not n.islower() or n == "unspecified")
        raise Invalid(
            "REVOCATION_REASON_INVALID",
            f"unknown revocation reason {name!r}; use one of: {choices}",
        ) from None
