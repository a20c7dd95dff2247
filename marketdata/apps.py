from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    name = "marketdata"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring only: the matching worker folds each batch into summaries and
        # candles, a bust recomputes them; the stream topic handlers register on
        # import.
        from exchange.busts import bust_hook_register
        from exchange.matching import batch_hook_register
        from marketdata import (  # noqa: F401
            bust_prices,
            depth,
            news,
            prices,
            scans,
            watchlists,
        )

        batch_hook_register(prices.prices_apply)
        batch_hook_register(depth.depth_apply)
        bust_hook_register(bust_prices.prices_after_bust)
