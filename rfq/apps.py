from django.apps import AppConfig


class RfqConfig(AppConfig):
    name = "rfq"
    verbose_name = "Keyline RFQ"

    def ready(self) -> None:
        from rfq import schema, signals  # noqa: F401 - the OpenAPI extension, signal receivers
