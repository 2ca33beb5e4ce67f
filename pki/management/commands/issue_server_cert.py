from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from pki.keystore import atomic_write
from pki.management.commands._base import KeylineCommand
from pki.services import command_actor, server_certificate_issue


class Command(KeylineCommand):
    help = (
        "Issue the nginx terminator's server certificate from the server CA and write "
        "server.key (0600), server.pem, server-fullchain.pem, server-chain.pem and root.pem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dns", nargs="*", default=[], metavar="NAME")
        parser.add_argument("--ip", nargs="*", default=[], metavar="ADDR")
        parser.add_argument("--out", required=True, type=Path, metavar="DIR")
        parser.add_argument("--days", type=int, default=None)

    def handle(
        self, *args: Any, dns: list[str], ip: list[str], out: Path, days: int | None, **options: Any
    ) -> None:
        issued = server_certificate_issue(
            dns_names=dns, ip_addresses=ip, days=days, actor=command_actor("issue_server_cert")
        )
        leaf = issued.certificate.pem
        atomic_write(out / "server.key", issued.private_key_pem, mode=0o600)
        atomic_write(out / "server.pem", leaf.encode())
        atomic_write(out / "server-fullchain.pem", (leaf + issued.chain_pem).encode())
        atomic_write(out / "server-chain.pem", issued.chain_pem.encode())
        atomic_write(out / "root.pem", issued.root_pem.encode())
        self.stdout.write(
            f"server certificate {issued.certificate.serial} "
            f"for {', '.join(issued.certificate.san)} in {out}"
        )
