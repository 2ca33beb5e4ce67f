from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "Keyline PKI"

    def ready(self) -> None:
        from pki import checks, signals  # noqa: F401  (registers the checks and receivers)
