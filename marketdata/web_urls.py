"""URLs of the retail web app (mounted at the site root)."""

from django.urls import path

from marketdata import web

app_name = "web"

urlpatterns = [
    path("", web.home, name="home"),
    path("trade/<str:identifier>/", web.trade, name="trade"),
    path("orders/<int:order_id>/cancel/", web.cancel, name="order-cancel"),
]
