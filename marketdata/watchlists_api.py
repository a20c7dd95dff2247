"""REST for watchlists under ``/api/v1/watchlists`` (signed-in users).

The caller's own lists and the system lists are visible; writes reach only the
caller's own (a system list answers ``403 watchlist_read_only``, another user's
``404``). Every write calls a service of :mod:`marketdata.watchlists`.
"""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from config.api import ApiError, PageNumberPagination
from config.auth import signed_in_user
from exchange.models import Symbol
from marketdata.models import Watchlist
from marketdata.news import (
    MAX_SYMBOLS,
    UnknownSymbolError,
    symbols_field_resolve,
    symbols_resolve,
)
from marketdata.watchlists import (
    WatchlistError,
    watchlist_copy,
    watchlist_create,
    watchlist_delete,
    watchlist_symbol_add,
    watchlist_symbol_remove,
    watchlist_to_wire,
    watchlist_update,
    watchlists_visible,
)

# -- serializers and views -----------------------------------------------------------------------------


class WatchlistWriteSerializer(serializers.Serializer[Any]):
    """``POST /api/v1/watchlists`` (and, partial, ``PATCH .../{id}``)."""

    name = serializers.CharField(max_length=100)
    symbols = serializers.ListField(
        child=serializers.CharField(max_length=40), default=list, max_length=MAX_SYMBOLS
    )

    def validate_symbols(self, value: list[str]) -> list[Symbol]:
        return symbols_field_resolve(value)


class WatchlistCopySerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)


class WatchlistSymbolSerializer(serializers.Serializer[Any]):
    symbol = serializers.CharField(max_length=40)
    position = serializers.IntegerField(min_value=0, required=False)

    def validate_symbol(self, value: str) -> Symbol:
        return symbols_field_resolve([value])[0]


class WatchlistSerializer(serializers.Serializer[Watchlist]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    is_system = serializers.BooleanField()
    symbols = serializers.ListField(child=serializers.CharField())
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance: Watchlist) -> dict[str, Any]:
        return watchlist_to_wire(instance)


class WatchlistViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Watchlist]
):
    """The caller's lists and the system lists; writes only to the caller's own."""

    serializer_class = WatchlistSerializer
    pagination_class = PageNumberPagination
    filter_backends: list[Any] = []
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[Watchlist]:
        return watchlists_visible(user=self.request.user)

    def _own(self) -> Watchlist:
        watchlist = self.get_object()
        if watchlist.is_system:
            raise WatchlistError(
                "System watchlists are read-only: copy one to change it.",
                code="watchlist_read_only",
                status=403,
            )
        return watchlist

    @extend_schema(
        request=WatchlistWriteSerializer, responses={201: WatchlistSerializer}
    )
    def create(self, request: Request) -> Response:
        body = WatchlistWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        watchlist = watchlist_create(
            owner=signed_in_user(request),
            **body.validated_data,
            acting_user=request.user,
        )
        return Response(watchlist_to_wire(watchlist), status=status.HTTP_201_CREATED)

    @extend_schema(request=WatchlistWriteSerializer, responses=WatchlistSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        body = WatchlistWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        watchlist = watchlist_update(
            watchlist=self._own(), **body.validated_data, acting_user=request.user
        )
        return Response(watchlist_to_wire(watchlist))

    def destroy(self, request: Request, pk: str) -> Response:
        watchlist_delete(watchlist=self._own(), acting_user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=WatchlistCopySerializer, responses={201: WatchlistSerializer}
    )
    @action(detail=True, methods=["post"])
    def copy(self, request: Request, pk: str) -> Response:
        body = WatchlistCopySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        watchlist = watchlist_copy(
            source=self.get_object(),
            owner=signed_in_user(request),
            name=body.validated_data["name"],
            acting_user=request.user,
        )
        return Response(watchlist_to_wire(watchlist), status=status.HTTP_201_CREATED)

    @extend_schema(request=WatchlistSymbolSerializer, responses=WatchlistSerializer)
    @action(detail=True, methods=["post"], url_path="symbols")
    def add_symbol(self, request: Request, pk: str) -> Response:
        body = WatchlistSymbolSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        watchlist = watchlist_symbol_add(
            watchlist=self._own(), **body.validated_data, acting_user=request.user
        )
        return Response(watchlist_to_wire(watchlist))

    @extend_schema(request=None, responses=WatchlistSerializer)
    @action(detail=True, methods=["delete"], url_path=r"symbols/(?P<symbol_id>[^/]+)")
    def remove_symbol(self, request: Request, pk: str, symbol_id: str) -> Response:
        watchlist = self._own()
        try:
            (symbol,) = symbols_resolve([symbol_id])
        except UnknownSymbolError as error:
            raise ApiError(error.code, error.message, field="symbol") from error
        watchlist = watchlist_symbol_remove(
            watchlist=watchlist, symbol=symbol, acting_user=request.user
        )
        return Response(watchlist_to_wire(watchlist))


router = SimpleRouter(trailing_slash=False)
router.register("watchlists", WatchlistViewSet, basename="watchlist")
urlpatterns = router.urls
