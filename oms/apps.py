from django.apps import AppConfig


class OmsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "oms"

    def ready(self) -> None:
        from exchange.services import market_transition_hook_register
        from oms.services import orders_expire_at_close

        market_transition_hook_register(orders_expire_at_close)
