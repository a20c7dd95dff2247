from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from config import metrics  # noqa: F401  (registers the matcher collector)
from config.health import healthz, readyz
from exchange.api import HolidayViewSet, MarketViewSet, SymbolViewSet, TradeViewSet
from oms.api import OrderViewSet
from registry.api import AccountViewSet
from registry.transfers_api import (
    AccountDepositsView,
    AccountTransfersView,
    AccountWithdrawalsView,
    TransferViewSet,
)

router = DefaultRouter(trailing_slash=False)
router.register("markets", MarketViewSet, basename="market")
router.register("symbols", SymbolViewSet, basename="symbol")
router.register("holidays", HolidayViewSet, basename="holiday")
router.register("trades", TradeViewSet, basename="trade")
router.register("accounts", AccountViewSet, basename="account")
router.register("orders", OrderViewSet, basename="order")
router.register("transfers", TransferViewSet, basename="transfer")

account_transfer_urls = [
    path(
        "accounts/<int:account_id>/withdrawals",
        AccountWithdrawalsView.as_view(),
        name="account-withdrawals",
    ),
    path(
        "accounts/<int:account_id>/deposits",
        AccountDepositsView.as_view(),
        name="account-deposits",
    ),
    path(
        "accounts/<int:account_id>/transfers",
        AccountTransfersView.as_view(),
        name="account-transfers",
    ),
]


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("marketdata.api_urls")),
    path("api/v1/", include(account_transfer_urls)),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"
    ),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("", include("django_prometheus.urls")),  # /metrics
    path("", include("marketdata.web_urls")),
]
