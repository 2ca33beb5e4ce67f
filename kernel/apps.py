import os
from typing import Any

from django.apps import AppConfig
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created


def _sqlite_private(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A SQLite database file (tooling only; it would hold sessions and second-factor seeds)
    is readable by its owner alone; SQLite gives its WAL files the same mode."""
    name = str(connection.settings_dict["NAME"])
    if connection.vendor == "sqlite" and name != ":memory:" and os.path.isfile(name):
        os.chmod(name, 0o600)


class KernelConfig(AppConfig):
    """What every app shares and nothing else: who (firms and their participants), what went
    wrong (the error tree and the API's error shape), what happened (the audit chain)."""

    name = "kernel"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(_sqlite_private, dispatch_uid="kernel.sqlite_private")
