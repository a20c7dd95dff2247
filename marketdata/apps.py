from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    name = "marketdata"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only: the matching worker folds each batch into summaries and
        # candles; the stream topic handlers register on import.
        from exchange.matching import batch_hook_register
        from marketdata import depth, news, prices, scans, watchlists  # noqa: F401

        batch_hook_register(prices.prices_apply)
        batch_hook_register(depth.depth_apply)
