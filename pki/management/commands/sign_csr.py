from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from kernel.models import Participant
from pki.keystore import atomic_write
from pki.management.commands._base import KeylineCommand
from pki.services import certificate_issue, command_actor, csr_submit


class Command(KeylineCommand):
    help = "Validate a participant's CSR and sign it with the client issuing CA (operators)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--participant", required=True, metavar="TRADER_ID")
        parser.add_argument("--csr", required=True, type=Path, metavar="FILE")
        parser.add_argument("--out", required=True, type=Path, metavar="FILE")
        parser.add_argument("--days", type=int, default=None)

    def handle(
        self, *args: Any, participant: str, csr: Path, out: Path, days: int | None, **options: Any
    ) -> None:
        holder = Participant.objects.select_related("firm").filter(trader_id=participant).first()
        if holder is None:
            raise CommandError(
                f"PARTICIPANT_NOT_FOUND: no participant {participant!r}", returncode=2
            )
        try:
            data = csr.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {csr}: {exc.strerror}", returncode=2) from exc
        actor = command_actor("sign_csr")
        request = csr_submit(participant=holder, data=data, actor=actor)
        certificate = certificate_issue(request=request, actor=actor, validity_days=days)
        atomic_write(out, certificate.pem.encode())
        self.stdout.write(
            f"issued {certificate.serial} to {certificate.san[0]} until "
            f"{certificate.not_after:%Y-%m-%d %H:%M}Z -> {out}"
        )
