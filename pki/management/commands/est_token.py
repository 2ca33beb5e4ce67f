"""An EST enrollment token for one participant, from the shell (the portal's participant page
makes them too): printed once (alone on stdout), stored only as its SHA-256, audited."""

from typing import Any

from django.core.management.base import CommandParser

from kernel.errors import NotFound
from kernel.models import Participant
from pki import est
from pki.management.commands._base import KeylineCommand
from pki.services import command_actor


class Command(KeylineCommand):
    help = "Make a one-time EST enrollment token for a participant (printed once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("trader_id")

    def handle(self, *args: Any, trader_id: str, **options: Any) -> None:
        participant = Participant.objects.select_related("firm").filter(trader_id=trader_id).first()
        if participant is None:
            raise NotFound("PARTICIPANT_NOT_FOUND", f"no participant {trader_id}")
        row, token = est.enrollment_token_create(
            participant=participant, actor=command_actor("est_token")
        )
        # The token alone on stdout (`> file`, `$(...)`); what it is for on stderr.
        self.stderr.write(f"token for {trader_id} (until {row.expires_at:%Y-%m-%d %H:%M}Z):")
        self.stdout.write(token)
