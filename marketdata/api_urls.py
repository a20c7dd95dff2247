"""Market-data REST routes under ``/api/v1/``."""

from django.urls import path

from marketdata import news, scans, watchlists_api
from marketdata.api import symbol_candles, symbol_summary

urlpatterns = [
    path("symbols/<str:symbol_id>/summary", symbol_summary, name="symbol-summary"),
    path("symbols/<str:symbol_id>/candles", symbol_candles, name="symbol-candles"),
    *news.urlpatterns,
    *watchlists_api.urlpatterns,
    *scans.urlpatterns,
]
