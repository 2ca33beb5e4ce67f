from django.apps import AppConfig


class RfqConfig(AppConfig):
    name = "rfq"
    verbose_name = "Keyline RFQ"

    def ready(self) -> None:
        from rfq import schema  # noqa: F401 - registers the OpenAPI authentication extension
