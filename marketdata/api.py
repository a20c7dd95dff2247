"""REST: symbol summaries (L1) and candles."""

from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ApiError
from exchange.api import symbol_from_identifier
from marketdata.models import Interval
from marketdata.prices import candle_to_wire, candles_list, summary_snapshot


class SummarySerializer(serializers.Serializer[Any]):
    symbol = serializers.CharField()
    seq = serializers.IntegerField()
    state = serializers.CharField()
    trading_date = serializers.DateField(allow_null=True)
    last = serializers.CharField(allow_null=True)
    change = serializers.CharField(allow_null=True)
    change_percent = serializers.CharField(allow_null=True)
    open = serializers.CharField(allow_null=True)
    high = serializers.CharField(allow_null=True)
    low = serializers.CharField(allow_null=True)
    previous_close = serializers.CharField(allow_null=True)
    best_bid = serializers.CharField(allow_null=True)
    best_ask = serializers.CharField(allow_null=True)
    volume = serializers.CharField()
    value_traded = serializers.CharField()
    trades = serializers.IntegerField()
    vwap = serializers.CharField(allow_null=True)


class CandleSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField()
    open = serializers.CharField()
    high = serializers.CharField()
    low = serializers.CharField()
    close = serializers.CharField()
    volume = serializers.CharField()
    value = serializers.CharField()
    trades = serializers.IntegerField()


@extend_schema(responses=SummarySerializer, operation_id="symbols_summary")
@api_view(["GET"])
def symbol_summary(request: Request, symbol_id: str) -> Response:
    """Level 1: last, change, OHLC, previous close, best bid/ask, volume, VWAP, with
    the ``ticker.<symbol>`` stream sequence it reflects."""
    return Response(summary_snapshot(symbol_from_identifier(symbol_id)))


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = parse_datetime(raw)
    if value is None or value.tzinfo is None:
        raise ApiError(
            "invalid_time",
            f"{name} must be an ISO 8601 time with a UTC offset.",
            field=name,
        )
    return value


@extend_schema(
    parameters=[
        OpenApiParameter("interval", enum=Interval.values, default="1m"),
        OpenApiParameter("from", str, description="ISO time, inclusive"),
        OpenApiParameter("to", str, description="ISO time, exclusive"),
        OpenApiParameter("limit", int, description="at most 1000 bars (default 500)"),
    ],
    responses=CandleSerializer(many=True),
    operation_id="symbols_candles",
)
@api_view(["GET"])
def symbol_candles(request: Request, symbol_id: str) -> Response:
    """OHLCV bars, oldest first; without ``from`` the latest ``limit`` bars."""
    symbol = symbol_from_identifier(symbol_id)
    interval = request.query_params.get("interval", Interval.M1)
    if interval not in Interval.values:
        raise ApiError(
            "invalid_interval",
            f"interval must be one of {', '.join(Interval.values)}.",
            field="interval",
        )
    limit_param = request.query_params.get("limit", "500")
    if not limit_param.isdigit() or not 1 <= int(limit_param) <= 1000:
        raise ApiError("invalid_limit", "limit must be from 1 to 1000.", field="limit")
    start, end = _time_param(request, "from"), _time_param(request, "to")
    bars = candles_list(symbol, interval, start, end, int(limit_param))
    return Response([candle_to_wire(bar, symbol) for bar in bars])
