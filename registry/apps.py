from django.apps import AppConfig
from django.core import checks


class RegistryConfig(AppConfig):
    name = "registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from registry.checks import check_operator_timezone

        checks.register(check_operator_timezone)
