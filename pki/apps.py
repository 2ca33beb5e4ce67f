from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "Keyline PKI"

    def ready(self) -> None:
        # Registers the checks and the receivers: pki.signals (participant and firm saves) and
        # pki.propagation (pki.events: issuance and status changes).
        from pki import checks, propagation, signals  # noqa: F401
