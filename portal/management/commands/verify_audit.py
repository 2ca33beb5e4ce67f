from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kernel.audit import audit_verify


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain; name the first broken record."

    def handle(self, *args: Any, **options: Any) -> None:
        result = audit_verify()
        if not result.ok:
            raise CommandError(
                f"audit chain broken at record #{result.broken_sequence}: {result.reason}",
                returncode=1,
            )
        self.stdout.write(f"audit chain intact: {result.checked} records")
