"""REST: markets, symbols, their books and trades, holidays, and market and symbol
control (staff and integrations)."""

from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ApiError, CursorPagination
from config.fields import DecimalStringField
from exchange.busts import trade_bust, trade_correct
from exchange.models import Holiday, Market, Symbol, Trade
from exchange.selectors import book_snapshot, symbol_find
from exchange.services import (
    market_set_state,
    market_state_set,
    market_to_wire,
    symbol_resume,
    symbol_suspend,
)
from exchange.wire import trade_to_wire


class MarketSerializer(serializers.ModelSerializer[Market]):
    class Meta:
        model = Market
        fields = ["code"]

    def to_representation(self, instance: Market) -> dict[str, Any]:
        return market_to_wire(instance)


class MarketActionSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class MarketStateSerializer(serializers.Serializer[Any]):
    """The body of ``POST /api/v1/markets/{code}/state``."""

    state = serializers.CharField(max_length=16)
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class IsStaffOrIntegration(permissions.BasePermission):
    """Staff users, or integration tokens whose user is staff."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_staff)


class MarketViewSet(viewsets.ReadOnlyModelViewSet[Market]):
    queryset = Market.objects.select_related("currency").order_by("code")
    serializer_class = MarketSerializer
    lookup_field = "code"
    pagination_class = None

    def _control(self, request: Request, code: str, action_name: str) -> Response:
        body = MarketActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        market = market_set_state(
            market=self.get_object(),
            action=action_name,
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        return Response(market_to_wire(market))

    @extend_schema(request=MarketActionSerializer, responses=MarketSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def open(self, request: Request, code: str) -> Response:
        return self._control(request, code, "open")

    @extend_schema(request=MarketActionSerializer, responses=MarketSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def halt(self, request: Request, code: str) -> Response:
        return self._control(request, code, "halt")

    @extend_schema(request=MarketActionSerializer, responses=MarketSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def resume(self, request: Request, code: str) -> Response:
        return self._control(request, code, "resume")

    @extend_schema(request=MarketActionSerializer, responses=MarketSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def close(self, request: Request, code: str) -> Response:
        return self._control(request, code, "close")

    @extend_schema(request=MarketStateSerializer, responses=MarketSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path="state",
        permission_classes=[IsStaffOrIntegration],
    )
    def set_state(self, request: Request, code: str) -> Response:
        """Put the market in any of its trading states (a reason is required)."""
        body = MarketStateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        market = market_state_set(
            market=self.get_object(),
            state=body.validated_data["state"],
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        return Response(market_to_wire(market))


class SymbolSerializer(serializers.ModelSerializer[Symbol]):
    id = serializers.CharField(source="identifier", read_only=True)
    market = serializers.CharField(source="market.code", read_only=True)
    currency = serializers.CharField(source="currency.code", read_only=True)
    tick_size = serializers.SerializerMethodField()
    lot_size = serializers.SerializerMethodField()
    min_quantity = serializers.SerializerMethodField()
    tick_table = serializers.SerializerMethodField()
    max_quantity = serializers.SerializerMethodField()
    min_value = serializers.SerializerMethodField()
    max_value = serializers.SerializerMethodField()
    price_band_percent = serializers.SerializerMethodField()
    trading_state = serializers.SerializerMethodField()

    class Meta:
        model = Symbol
        fields = [
            "id",
            "market",
            "code",
            "name",
            "currency",
            "tick_size",
            "tick_table",
            "lot_size",
            "min_quantity",
            "max_quantity",
            "min_value",
            "max_value",
            "price_band_percent",
            "status",
            "trading_state",
            "state_reason",
            "halted_until",
        ]

    def get_tick_table(self, symbol: Symbol) -> list[dict[str, str]] | None:
        """The price bands (``from_price`` up to the next band: ``tick_size``)."""
        if symbol.tick_table_id is None:
            return None
        return [
            {
                "from_price": str(symbol.format_price(band.from_price)),
                "tick_size": str(symbol.format_price(band.tick_size)),
            }
            for band in symbol.tick_bands
        ]

    def get_max_quantity(self, symbol: Symbol) -> str | None:
        value = symbol.max_quantity
        return None if value is None else str(symbol.asset.quantize(value))

    def get_min_value(self, symbol: Symbol) -> str | None:
        value = symbol.min_value
        return None if value is None else str(symbol.currency.quantize(value))

    def get_max_value(self, symbol: Symbol) -> str | None:
        value = symbol.max_value
        return None if value is None else str(symbol.currency.quantize(value))

    def get_price_band_percent(self, symbol: Symbol) -> str | None:
        value = symbol.price_band_percent
        return None if value is None else str(value)

    def get_trading_state(self, symbol: Symbol) -> str | None:
        """The symbol's own state overriding its market's (None: none)."""
        return symbol.trading_state or None

    def get_tick_size(self, symbol: Symbol) -> str:
        return str(symbol.format_price(symbol.tick_size))

    def get_lot_size(self, symbol: Symbol) -> str:
        return str(symbol.asset.quantize(symbol.lot_size))

    def get_min_quantity(self, symbol: Symbol) -> str:
        return str(symbol.asset.quantize(symbol.min_quantity))


class TradeSerializer(serializers.ModelSerializer[Trade]):
    class Meta:
        model = Trade
        fields = [
            "id",
            "seq",
            "symbol",
            "price",
            "quantity",
            "aggressor_side",
            "executed_at",
        ]

    def to_representation(self, instance: Trade) -> dict[str, Any]:
        return trade_to_wire(instance)


def symbol_from_identifier(identifier: str) -> Symbol:
    symbol = symbol_find(identifier)
    if symbol is None:
        raise ApiError(
            "not_found", f"There is no symbol {identifier!r}.", status_code=404
        )
    return symbol


class SymbolActionSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class SymbolViewSet(viewsets.ReadOnlyModelViewSet[Symbol]):
    queryset = (
        Symbol.objects.select_related("market", "asset", "currency", "tick_table")
        .prefetch_related("tick_table__bands")
        .order_by("market__code", "code")
    )
    serializer_class = SymbolSerializer
    lookup_value_regex = r"[A-Za-z0-9]+:[A-Za-z0-9]+"
    filterset_fields = ["status"]
    pagination_class = None

    def get_object(self) -> Symbol:
        return symbol_from_identifier(self.kwargs["pk"])

    def _control(self, request: Request, service: Any) -> Response:
        body = SymbolActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        symbol = service(
            symbol=self.get_object(),
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        symbol = symbol_from_identifier(symbol.identifier)
        return Response(SymbolSerializer(symbol).data)

    @extend_schema(request=SymbolActionSerializer, responses=SymbolSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def suspend(self, request: Request, pk: str) -> Response:
        """Suspend trading in the symbol (a reason is required)."""
        return self._control(request, symbol_suspend)

    @extend_schema(request=SymbolActionSerializer, responses=SymbolSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaffOrIntegration])
    def resume(self, request: Request, pk: str) -> Response:
        """End the symbol's suspension or circuit-breaker halt."""
        return self._control(request, symbol_resume)

    @extend_schema(
        responses=inline_serializer(
            "Book",
            {
                "symbol": serializers.CharField(),
                "seq": serializers.IntegerField(),
                "bids": serializers.ListField(child=serializers.ListField()),
                "asks": serializers.ListField(child=serializers.ListField()),
            },
        )
    )
    @action(detail=True, methods=["get"])
    def book(self, request: Request, pk: str) -> Response:
        depth_param = request.query_params.get("depth", "50")
        if not depth_param.isdigit() or not 1 <= int(depth_param) <= 1000:
            raise ApiError(
                "invalid_depth",
                "depth must be an integer from 1 to 1000.",
                field="depth",
            )
        return Response(book_snapshot(self.get_object(), int(depth_param)))

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="ISO time, inclusive"),
            OpenApiParameter("to", str, description="ISO time, exclusive"),
            OpenApiParameter("after_seq", int, description="trades after this seq"),
            OpenApiParameter("before_seq", int, description="trades before this seq"),
        ],
        responses=TradeSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def trades(self, request: Request, pk: str) -> Response:
        """The tape, newest first, cursor-paged; narrowed by time (``from``/``to``)
        and by the per-symbol trade sequence (``after_seq``/``before_seq``)."""
        symbol = self.get_object()
        queryset = Trade.objects.filter(symbol=symbol).select_related(
            "symbol__market", "symbol__asset"
        )
        params = request.query_params
        for name, lookup in (("from", "executed_at__gte"), ("to", "executed_at__lt")):
            if name in params:
                moment = parse_datetime(params[name])
                if moment is None or moment.tzinfo is None:
                    raise ApiError(
                        "invalid_time",
                        f"{name} must be an ISO 8601 time with a UTC offset.",
                        field=name,
                    )
                queryset = queryset.filter(**{lookup: moment})
        for name, lookup in (("after_seq", "seq__gt"), ("before_seq", "seq__lt")):
            if name in params:
                if not params[name].isdigit():
                    raise ApiError(
                        "invalid_seq", f"{name} must be a whole number.", field=name
                    )
                queryset = queryset.filter(**{lookup: int(params[name])})
        paginator = CursorPagination()
        page = paginator.page_of(queryset, request, view=self)
        return paginator.get_paginated_response([trade_to_wire(t) for t in page])


class HolidaySerializer(serializers.ModelSerializer[Holiday]):
    market = serializers.CharField(source="market.code")

    class Meta:
        model = Holiday
        fields = ["id", "market", "date", "name"]


class HolidayViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[Holiday]):
    queryset = Holiday.objects.select_related("market").order_by("date")
    serializer_class = HolidaySerializer
    filterset_fields = {"market__code": ["exact"], "date": ["gte", "lte"]}


class TradeBustSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=200, allow_blank=True)


class TradeCorrectSerializer(serializers.Serializer[Any]):
    price = DecimalStringField(max_whole_digits=12)
    quantity = DecimalStringField(max_places=10, max_whole_digits=20)
    reason = serializers.CharField(max_length=200, allow_blank=True)


def busted_trade_to_wire(trade: Trade) -> dict[str, Any]:
    """A trade with its bust and correction fields (staff answers)."""
    return {
        **trade_to_wire(trade),
        "value": str(trade.symbol.currency.quantize(trade.value)),
        "buyer_fee": str(trade.symbol.currency.quantize(trade.buyer_fee)),
        "seller_fee": str(trade.symbol.currency.quantize(trade.seller_fee)),
        "busted_at": trade.busted_at.isoformat() if trade.busted_at else None,
        "busted_by": trade.busted_by.get_username() if trade.busted_by else None,
        "bust_reason": trade.bust_reason,
        "corrected_from": trade.corrected_from_id,
    }


class TradeViewSet(viewsets.GenericViewSet[Trade]):
    """Staff and integration actions on one trade (the tape is per symbol)."""

    queryset = Trade.objects.select_related(
        "symbol__market", "symbol__asset", "symbol__currency", "busted_by"
    )
    permission_classes = [IsStaffOrIntegration]
    lookup_value_regex = r"[0-9]+"

    @extend_schema(
        request=TradeBustSerializer,
        responses=inline_serializer("BustedTrade", {"trade": serializers.DictField()}),
    )
    @action(detail=True, methods=["post"])
    def bust(self, request: Request, pk: str) -> Response:
        """Reverse the trade in the ledger (``exchange.busts.trade_bust``): 200 with
        the busted trade and the bust's journal entry id; 400 ``reason_required``,
        409 ``trade_already_busted``, 422 ``bust_insufficient_balance``."""
        body = TradeBustSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = trade_bust(
            trade=self.get_object(),
            acting_user=request.user,
            reason=body.validated_data["reason"],
        )
        trade = self.get_queryset().get(pk=result.trade.pk)
        return Response(
            {"trade": busted_trade_to_wire(trade), "entry": result.entry.pk}
        )

    @extend_schema(
        request=TradeCorrectSerializer,
        responses=inline_serializer(
            "CorrectedTrade",
            {"busted": serializers.DictField(), "correction": serializers.DictField()},
        ),
    )
    @action(detail=True, methods=["post"])
    def correct(self, request: Request, pk: str) -> Response:
        """Bust the trade and book a replacement at ``price`` x ``quantity``
        (``exchange.busts.trade_correct``): 201 with both trades; the bust's errors,
        400 ``price_off_tick``/``quantity_off_lot``/``invalid_price``/
        ``invalid_quantity``, 422 ``correction_insufficient_balance``."""
        body = TradeCorrectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = trade_correct(
            trade=self.get_object(),
            price=body.validated_data["price"],
            quantity=body.validated_data["quantity"],
            acting_user=request.user,
            reason=body.validated_data["reason"],
        )
        trades = self.get_queryset().in_bulk([result.busted.pk, result.correction.pk])
        return Response(
            {
                "busted": busted_trade_to_wire(trades[result.busted.pk]),
                "correction": busted_trade_to_wire(trades[result.correction.pk]),
                "bust_entry": result.bust_entry.pk,
                "correction_entry": result.correction_entry.pk,
            },
            status=201,
        )
