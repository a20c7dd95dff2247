from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from exchange.selectors import trade_details_for_account
        from registry.statements import trade_details_register

        # Statements and transaction lists describe trades (registry cannot import
        # exchange: it is the lower layer).
        trade_details_register(trade_details_for_account)
