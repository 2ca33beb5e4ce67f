from typing import Any

from django.core.management.base import CommandParser

from pki.management.commands._base import KeylineCommand
from pki.services import command_actor, ocsp_responder_renew


class Command(KeylineCommand):
    help = "Renew the OCSP responder delegate certificate if it is due (or --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true")

    def handle(self, *args: Any, force: bool, **options: Any) -> None:
        renewed = ocsp_responder_renew(actor=command_actor("renew_ocsp_responder"), force=force)
        if renewed is None:
            self.stdout.write("OCSP responder certificate is not due for renewal.")
        else:
            self.stdout.write(
                f"OCSP responder certificate {renewed.serial} "
                f"until {renewed.not_after:%Y-%m-%d %H:%M}Z"
            )
