"""News: publishing stories, reading them over REST, and the ``news`` stream topic.

Staff (in the admin) and integrations (``POST /api/v1/news``) publish through
:func:`news_publish`; staff corrections go through :func:`news_update`. Each write
is audited, advances the public ``news`` stream in the same transaction and, after
commit, publishes the item there (a correction under the id it already has).
Signed-in users read ``GET /api/v1/news`` (newest first, cursor pages) and
``GET /api/v1/news/{id}``; WebSocket subscribers to ``news`` get the latest
:data:`SNAPSHOT_SIZE` items, then each published or corrected item.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from config.api import ApiError, CursorPagination
from exchange.api import IsStaffOrIntegration
from exchange.models import Symbol
from exchange.selectors import snapshot_transaction
from exchange.streams import (
    publish_on_commit,
    stream_advance,
    stream_current,
    stream_message,
)
from marketdata.models import NewsItem
from marketdata.topics import Snapshot, register, unknown
from registry.services import RegistryError, User, _user_id, audit_record

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

NEWS_TOPIC = "news"
#: Items in a ``news`` stream snapshot.
SNAPSHOT_SIZE = 50
#: Symbols one request may name (a news item's, or a watchlist's).
MAX_SYMBOLS = 200


class NewsError(RegistryError):
    """A news write that cannot be carried out (a 400); nothing was changed."""


class UnknownSymbolError(RegistryError):
    code = "unknown_symbol"


# -- symbols by ``MARKET:CODE`` (shared with watchlists) ------------------------------


def symbols_resolve(identifiers: Sequence[str]) -> list[Symbol]:
    """The symbols named ``MARKET:CODE``, in the order given (repeats kept), with
    their markets loaded. Raises :class:`UnknownSymbolError` for the first unknown
    identifier."""
    query = Q()
    for identifier in set(identifiers):
        market_code, _, code = identifier.partition(":")
        if market_code and code:
            query |= Q(market__code=market_code, code=code)
    found = (
        {s.identifier: s for s in Symbol.objects.select_related("market").filter(query)}
        if query
        else {}
    )
    for identifier in identifiers:
        if identifier not in found:
            raise UnknownSymbolError(f"There is no symbol {identifier!r}.")
    return [found[identifier] for identifier in identifiers]


def symbols_field_resolve(identifiers: Sequence[str]) -> list[Symbol]:
    """:func:`symbols_resolve` for a serializer's ``validate_<field>``."""
    try:
        return symbols_resolve(identifiers)
    except UnknownSymbolError as error:
        raise serializers.ValidationError(error.message, code=error.code) from error


# -- wire shape and selectors ---------------------------------------------------------


def _symbols_prefetch() -> Prefetch:
    return Prefetch(
        "symbols",
        queryset=Symbol.objects.select_related("market").order_by(
            "market__code", "code"
        ),
    )


def news_to_wire(item: NewsItem) -> dict[str, Any]:
    """The one JSON shape of a news item (REST and stream); symbols prefetched."""
    return {
        "id": item.pk,
        "source": item.source,
        "headline": item.headline,
        "body": item.body,
        "priority": item.priority,
        "is_price_sensitive": item.is_price_sensitive,
        "symbols": sorted(symbol.identifier for symbol in item.symbols.all()),
        "published_at": item.published_at.isoformat(),
    }


def news_list() -> QuerySet[NewsItem]:
    """Every item, newest first, ready for :func:`news_to_wire`."""
    return NewsItem.objects.prefetch_related(_symbols_prefetch()).order_by(
        "-published_at", "-id"
    )


def news_get(*, item_id: int) -> NewsItem:
    return news_list().get(pk=item_id)


def news_snapshot(limit: int = SNAPSHOT_SIZE) -> dict[str, Any]:
    """The latest ``limit`` items and the ``news`` sequence they reflect."""
    with snapshot_transaction():
        seq = stream_current([NEWS_TOPIC])[NEWS_TOPIC]
        items = [news_to_wire(item) for item in news_list()[:limit]]
    return {"seq": seq, "items": items}


# -- services -------------------------------------------------------------------------


def _check(*, source: str, headline: str, priority: int) -> None:
    if not source.strip():
        raise NewsError("A news item needs a source.", code="blank", field="source")
    if not headline.strip():
        raise NewsError("A news item needs a headline.", code="blank", field="headline")
    if priority not in NewsItem.Priority.values:
        raise NewsError(
            f"Priority must be one of {NewsItem.Priority.values}.",
            code="invalid_choice",
            field="priority",
        )


def _publish(item: NewsItem) -> NewsItem:
    """Advance ``news`` and send the item after commit; return it loaded for
    :func:`news_to_wire`. Inside the transaction that wrote it."""
    item = news_get(item_id=item.pk)
    seq = stream_advance({NEWS_TOPIC: 1})[NEWS_TOPIC]
    publish_on_commit([stream_message(NEWS_TOPIC, seq, news_to_wire(item))])
    return item


def news_publish(
    *,
    source: str,
    headline: str,
    body: str = "",
    priority: int = NewsItem.Priority.NORMAL,
    is_price_sensitive: bool = False,
    symbols: Iterable[Symbol] = (),
    acting_user: User,
    published_at: datetime | None = None,
) -> NewsItem:
    """Store a news item (published now unless ``published_at`` is given), audit it
    as ``news_publish`` and, after commit, publish it on the ``news`` stream.

    Raises :class:`NewsError` for a blank source or headline or an unknown priority.
    """
    _check(source=source, headline=headline, priority=priority)
    symbols = list(dict.fromkeys(symbols))
    with transaction.atomic():
        item = NewsItem.objects.create(
            source=source,
            headline=headline,
            body=body,
            priority=priority,
            is_price_sensitive=is_price_sensitive,
            published_at=published_at or timezone.now(),
            published_by_id=_user_id(acting_user),
        )
        item.symbols.set(symbols)
        audit_record(
            actor=acting_user,
            action="news_publish",
            target=item,
            changes={
                "headline": headline,
                "priority": priority,
                "symbols": sorted(symbol.identifier for symbol in symbols),
            },
        )
        return _publish(item)


NEWS_FIELDS = ("source", "headline", "body", "priority", "is_price_sensitive")


def news_update(
    *,
    item: NewsItem,
    acting_user: User,
    source: str | None = None,
    headline: str | None = None,
    body: str | None = None,
    priority: int | None = None,
    is_price_sensitive: bool | None = None,
    symbols: Iterable[Symbol] | None = None,
) -> NewsItem:
    """Correct a published item: the fields given (None: unchanged).

    Audited as ``news_change`` with ``{field: [old, new]}``; if anything changed,
    the corrected item is published on ``news`` after commit under its own id (its
    ``published_at`` stays). Raises :class:`NewsError` as :func:`news_publish`.
    """
    values = {
        "source": source,
        "headline": headline,
        "body": body,
        "priority": priority,
        "is_price_sensitive": is_price_sensitive,
    }
    with transaction.atomic():
        item = news_list().select_for_update(of=("self",)).get(pk=item.pk)
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if value is not None and getattr(item, name) != value:
                changes[name] = [getattr(item, name), value]
                setattr(item, name, value)
        _check(source=item.source, headline=item.headline, priority=item.priority)
        old_symbols = sorted(symbol.identifier for symbol in item.symbols.all())
        if symbols is not None:
            symbols = list(dict.fromkeys(symbols))
            new_symbols = sorted(symbol.identifier for symbol in symbols)
            if new_symbols != old_symbols:
                changes["symbols"] = [old_symbols, new_symbols]
                item.symbols.set(symbols)
        if not changes:
            return item
        item.save(update_fields=[name for name in NEWS_FIELDS if name in changes])
        audit_record(
            actor=acting_user, action="news_change", target=item, changes=changes
        )
        return _publish(item)


# -- REST -----------------------------------------------------------------------------


class NewsPublishSerializer(serializers.Serializer[Any]):
    """The body of ``POST /api/v1/news``."""

    # A declared field named ``source``: DRF's metaclass moves it into
    # ``_declared_fields``, so it does not shadow ``Field.source`` as the stubs think.
    source = serializers.CharField(max_length=100)  # type: ignore[assignment]
    headline = serializers.CharField(max_length=300)
    body = serializers.CharField(allow_blank=True, default="", trim_whitespace=False)
    priority = serializers.ChoiceField(
        choices=NewsItem.Priority.choices, default=NewsItem.Priority.NORMAL
    )
    is_price_sensitive = serializers.BooleanField(default=False)
    symbols = serializers.ListField(
        child=serializers.CharField(max_length=40), default=list, max_length=MAX_SYMBOLS
    )

    def validate_symbols(self, value: list[str]) -> list[Symbol]:
        return symbols_field_resolve(value)


class NewsItemSerializer(serializers.Serializer[NewsItem]):
    """A news item as every door returns it."""

    id = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]  # as above
    headline = serializers.CharField()
    body = serializers.CharField()
    priority = serializers.ChoiceField(choices=NewsItem.Priority.choices)
    is_price_sensitive = serializers.BooleanField()
    symbols = serializers.ListField(child=serializers.CharField())
    published_at = serializers.DateTimeField()

    def to_representation(self, instance: NewsItem) -> dict[str, Any]:
        return news_to_wire(instance)


class NewsFilter(filters.FilterSet):
    symbol = filters.CharFilter(
        method="filter_symbol", label="Items about this symbol (MARKET:CODE)"
    )

    class Meta:
        model = NewsItem
        fields = {
            "priority": ["exact", "gte", "lte"],
            "is_price_sensitive": ["exact"],
            "source": ["exact"],
        }

    def filter_symbol(
        self, queryset: QuerySet[NewsItem], name: str, value: str
    ) -> QuerySet[NewsItem]:
        try:
            (symbol,) = symbols_resolve([value])
        except UnknownSymbolError as error:
            raise ApiError(error.code, error.message, field="symbol") from error
        return queryset.filter(symbols=symbol)


class NewsPagination(CursorPagination):
    # DRF takes a tuple of fields here; the stubs declare a single str.
    ordering = ("-published_at", "-id")  # type: ignore[assignment]


class NewsViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[NewsItem]
):
    """Signed-in users read; staff and integrations publish."""

    serializer_class = NewsItemSerializer
    pagination_class = NewsPagination
    filterset_class = NewsFilter
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[NewsItem]:
        return news_list()

    def get_permissions(self) -> Sequence["_SupportsHasPermission"]:
        if self.action == "create":
            return [IsStaffOrIntegration()]
        return super().get_permissions()

    @extend_schema(request=NewsPublishSerializer, responses={201: NewsItemSerializer})
    def create(self, request: Request) -> Response:
        body = NewsPublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        item = news_publish(**body.validated_data, acting_user=request.user)
        return Response(news_to_wire(item), status=status.HTTP_201_CREATED)


router = SimpleRouter(trailing_slash=False)
router.register("news", NewsViewSet, basename="news")
urlpatterns = router.urls


# -- stream topic ---------------------------------------------------------------------


class NewsTopic:
    """``news`` (public): the latest items, then each published or corrected one."""

    def upstreams(self, user: Any, argument: str) -> list[str]:
        if argument:
            raise unknown(f"news.{argument}")
        return [NEWS_TOPIC]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = news_snapshot()
        return Snapshot(seq=data["seq"], data=data["items"])


register("news", NewsTopic())
