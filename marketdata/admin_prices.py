"""Summaries and candles in the admin: read-only, kept by the matching worker."""

from django.contrib import admin

from marketdata.models import Candle, SecuritySummary
from registry.admin import ReadOnlyAdminMixin


@admin.register(SecuritySummary)
class SecuritySummaryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "symbol",
        "trading_date",
        "last",
        "previous_close",
        "best_bid",
        "best_ask",
        "volume",
        "trades",
        "updated_at",
    ]
    list_select_related = ["symbol__market"]
    search_fields = ["symbol__code"]


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "symbol",
        "interval",
        "start",
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]
    list_filter = ["interval"]
    list_select_related = ["symbol__market"]
    search_fields = ["symbol__code"]
    show_full_result_count = False
