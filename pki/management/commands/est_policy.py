"""Show or set a firm's EST policy from the shell (officers set it on the firm's page too):
auto-signing of first certificates and of renewals, the renewal window, a block. Audited."""

from typing import Any

from django.core.management.base import CommandParser

from kernel.errors import NotFound
from kernel.models import Firm
from pki import est
from pki.management.commands._base import KeylineCommand
from pki.services import command_actor


class Command(KeylineCommand):
    help = "Show or set a firm's EST policy (by LEI)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("lei")
        for name in ("auto_sign_enrollment", "auto_sign_renewal", "renewal_blocked"):
            flag = name.replace("_", "-")
            parser.add_argument(f"--{flag}", dest=name, action="store_true", default=None)
            parser.add_argument(f"--no-{flag}", dest=name, action="store_false")
        parser.add_argument(
            "--renewal-window-percent",
            type=int,
            choices=range(1, 101),
            metavar="1-100",
            help="renewal opens when this share of the lifetime remains",
        )

    def handle(self, *args: Any, lei: str, **options: Any) -> None:
        firm = Firm.objects.filter(lei=lei.upper()).first()
        if firm is None:
            raise NotFound("FIRM_NOT_FOUND", f"no firm with LEI {lei}")
        values = {n: options[n] for n in est.POLICY_FIELDS if options.get(n) is not None}
        policy = (
            est.policy_set(firm=firm, actor=command_actor("est_policy"), **values)
            if values
            else est.policy_of(firm)
        )
        for name in est.POLICY_FIELDS:
            self.stdout.write(f"{name}: {getattr(policy, name)}")
