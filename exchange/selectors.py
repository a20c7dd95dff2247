"""Exchange reads that must be consistent with a stream sequence."""

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce

from exchange.models import Market, Symbol, Trade
from exchange.streams import stream_current
from exchange.wire import trade_to_wire
from oms.models import RESTING_STATUSES, Order
from registry.statements import TradeDetail


def symbol_find(identifier: str) -> Symbol | None:
    """The symbol addressed as ``MARKET:CODE`` (market, asset, currency and tick
    table with its bands loaded), or None; callers raise the error that fits their
    door."""
    market_code, _, code = identifier.partition(":")
    if not market_code or not code:
        return None
    return (
        Symbol.objects.select_related("market", "asset", "currency", "tick_table")
        .prefetch_related("tick_table__bands")
        .filter(market__code=market_code, code=code)
        .first()
    )


@contextmanager
def snapshot_transaction() -> Iterator[None]:
    """A read transaction seeing one committed state (REPEATABLE READ)."""
    starts_transaction = not connection.in_atomic_block
    with transaction.atomic():
        # Inside a caller's transaction its isolation level stands (it can only
        # be set before the transaction's first query).
        if starts_transaction:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def book_snapshot(symbol: Symbol, depth: int | None = None) -> dict[str, Any]:
    """Price levels aggregated from the resting orders, with the ``book`` stream
    sequence they reflect (read in one snapshot)."""
    topic = f"book.{symbol.identifier}"
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        levels: list[Mapping[str, Any]] = list(
            # Only priced orders rest in the book (a market order never does).
            Order.objects.filter(
                symbol=symbol, status__in=RESTING_STATUSES, price__isnull=False
            )
            .values("side", "price")
            .annotate(
                # An iceberg shows only its visible part.
                quantity=Sum(
                    Coalesce("visible_quantity", F("quantity") - F("filled_quantity"))
                ),
                orders=Count("id"),
            )
        )
        bids = sorted(
            (lv for lv in levels if lv["side"] == Order.Side.BUY),
            key=lambda lv: -lv["price"],
        )
        asks = sorted(
            (lv for lv in levels if lv["side"] == Order.Side.SELL),
            key=lambda lv: lv["price"],
        )

    def rows(side_levels: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        return [
            [
                str(symbol.format_price(lv["price"])),
                str(symbol.asset.quantize(lv["quantity"])),
                lv["orders"],
            ]
            for lv in side_levels[:depth]
        ]

    return {
        "symbol": symbol.identifier,
        "seq": seq,
        "bids": rows(bids),
        "asks": rows(asks),
    }


def trades_snapshot(symbol: Symbol, limit: int = 50) -> dict[str, Any]:
    """The latest trades, newest first, with the ``trades`` stream sequence."""
    topic = f"trades.{symbol.identifier}"
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        trades = list(
            Trade.objects.filter(symbol=symbol, seq__lte=seq)
            .select_related("symbol__market", "symbol__asset")
            .order_by("-seq")[:limit]
        )
    return {
        "symbol": symbol.identifier,
        "seq": seq,
        "trades": [trade_to_wire(t) for t in trades],
    }


def market_snapshot(market: Market) -> dict[str, Any]:
    from exchange.services import market_to_wire

    topic = f"market.{market.code}"
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        market = Market.objects.select_related("currency").get(pk=market.pk)
    return {"seq": seq, **market_to_wire(market)}


def trade_details_for_account(
    account_id: int, trade_ids: Collection[int]
) -> list[TradeDetail]:
    """The account's side of each of ``trade_ids`` (two for a trade between two of
    its own orders): price, quantity and value of the trade, the account's fee.

    Registered with ``registry.statements`` for statements and transaction
    descriptions (``ExchangeConfig.ready``)."""
    trades = (
        Trade.objects.filter(pk__in=trade_ids)
        .filter(Q(buyer_id=account_id) | Q(seller_id=account_id))
        .select_related("symbol__market", "symbol__asset", "symbol__currency")
        .order_by("pk")
    )
    details = []
    for trade in trades:
        symbol = trade.symbol
        currency = symbol.currency
        sides = (
            (Trade.Side.BUY, trade.buyer_id, trade.buyer_fee),
            (Trade.Side.SELL, trade.seller_id, trade.seller_fee),
        )
        for side, side_account_id, fee in sides:
            if side_account_id != account_id:
                continue
            details.append(
                TradeDetail(
                    trade_id=trade.pk,
                    executed_at=trade.executed_at,
                    symbol=symbol.identifier,
                    side=side,
                    price=symbol.format_price(trade.price),
                    quantity=symbol.asset.quantize(trade.quantity),
                    value=currency.quantize(trade.value),
                    fee=currency.quantize(fee),
                    currency=currency.code,
                    busted_at=trade.busted_at,
                    corrected_from=trade.corrected_from_id,
                )
            )
    return details
