from datetime import datetime
from typing import Any

from django.core.management.base import CommandParser

from kernel.errors import Invalid, NotFound
from pki.crypto import serial_normalize
from pki.management.commands._base import KeylineCommand
from pki.models import Certificate
from pki.reasons import REASON_NAMES
from pki.revocation import certificate_revoke
from pki.services import command_actor


class Command(KeylineCommand):
    help = (
        "Revoke one certificate with an RFC 5280 reason; the CRLs are republished and the "
        "OCSP responses re-signed at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--serial", required=True, help="serial number, hex")
        parser.add_argument(
            "--reason",
            required=True,
            help="one of: " + ", ".join(n for n in REASON_NAMES if "_" not in n),
        )
        parser.add_argument(
            "--invalidity-date",
            help="ISO 8601 time with zone when the key is known or suspected to have been "
            "compromised (may precede the revocation)",
        )

    def handle(
        self, *args: Any, serial: str, reason: str, invalidity_date: str | None, **options: Any
    ) -> None:
        serial = serial_normalize(serial) or serial
        certificate = Certificate.objects.filter(serial=serial).first()
        if certificate is None:
            raise NotFound("CERTIFICATE_NOT_FOUND", f"no certificate with serial {serial}")
        when = None
        if invalidity_date:
            try:
                when = datetime.fromisoformat(invalidity_date)
            except ValueError:
                raise Invalid(
                    "INVALIDITY_DATE_INVALID", f"not an ISO 8601 time: {invalidity_date!r}"
                ) from None
        cert = certificate_revoke(
            certificate=certificate,
            reason=reason,
            invalidity_date=when,
            actor=command_actor("revoke_cert"),
        )
        self.stdout.write(
            f"Revoked {cert.serial} ({cert.subject}) at {cert.revoked_at:%Y-%m-%d %H:%M:%S}Z, "
            f"reason {cert.revocation_reason}"
        )
