from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Keyline portal"

    def ready(self) -> None:
        from portal import signals  # noqa: F401 - registers the sign-in audit receivers
