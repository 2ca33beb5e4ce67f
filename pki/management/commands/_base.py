"""A base for our commands: every failure exits non-zero with one line saying why."""

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from kernel.errors import DomainError


class KeylineCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}", returncode=2) from exc
        except (ImproperlyConfigured, FileExistsError) as exc:
            raise CommandError(str(exc), returncode=2) from exc
