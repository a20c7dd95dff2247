"""Market-data admin: each concern registers its own models."""

from marketdata import admin_news, admin_prices, admin_scans, admin_watchlists  # noqa: F401
