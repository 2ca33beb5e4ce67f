from typing import Any

from pki.keystore import ca_dir
from pki.management.commands._base import KeylineCommand
from pki.revocation import crl_publish
from pki.services import command_actor


class Command(KeylineCommand):
    help = (
        "Build, sign and publish a new CRL for every active CA (the root's is the ARL), write "
        "<CA dir>/crl/*.crl and bundle.pem atomically and run KEYLINE_CRL_RELOAD_COMMAND."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for row in crl_publish(actor=command_actor("publish_crl")):
            self.stdout.write(
                f"{row.ca.slug}: CRL #{row.number}, {row.entries} entries, "
                f"next update {row.next_update:%Y-%m-%d %H:%M}Z, {row.build_seconds:.3f} s"
            )
        self.stdout.write(f"Files in {ca_dir() / 'crl'}")
