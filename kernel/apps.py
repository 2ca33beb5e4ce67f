from django.apps import AppConfig


class KernelConfig(AppConfig):
    """What every app shares and nothing else: who (firms and their participants), what went
    wrong (the error tree and the API's error shape), what happened (the audit chain)."""

    name = "kernel"
    default_auto_field = "django.db.models.BigAutoField"
