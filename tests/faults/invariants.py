"""The invariants every fault test checks once the fault has passed.

- the inbox is drained: no request left unprocessed;
- per asset the ledger sums to zero, stored balances equal their postings, no
  available amount is negative, and held equals exactly what the open orders and
  pending withdrawals need (``tests.conftest.assert_trading_consistent``, which also
  checks filled = trades = fill events and a gapless trade sequence);
- no persisted crossed book (outside an auction);
- no lost acknowledged order (each is stored, has left ``pending`` and had its place
  request processed) and no lost acknowledged cancel (the order is finished);
- no double processing (an order leaves ``pending`` once, finishes once);
- the book rebuilt from the database equals a clean replay of the processed
  requests, in the order the worker took them, through a fresh engine, and so do the fills.
"""

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from decimal import Decimal

from django.db.models import Count, Max, Min

from exchange import engine
from exchange.matching import MatchingWorker
from exchange.matching.commands import new_order_command
from exchange.models import Market, Symbol, Trade
from oms.models import (
    OPEN_STATUSES,
    RESTING_STATUSES,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from registry.models import Balance
from tests.conftest import assert_trading_consistent

#: An order's price and quantity as acknowledged at entry (amends change them).
Originals = dict[int, tuple[Decimal, Decimal]]
TERMINAL = {
    OrderStatus.FILLED,
    OrderStatus.CANCELLED,
    OrderStatus.REJECTED,
    OrderStatus.EXPIRED,
}


def assert_inbox_drained() -> None:
    left = OrderRequest.objects.filter(processed_at__isnull=True).count()
    assert left == 0, f"{left} requests never processed"


def assert_no_negative_available() -> None:
    negative = list(
        Balance.objects.filter(allow_negative=False, available__lt=0).values_list(
            "account_id", "asset__code", "available"
        )
    )
    assert negative == [], negative


def assert_book_not_crossed() -> None:
    """No symbol outside an auction has a resting bid at or above a resting ask."""
    for symbol in Symbol.objects.filter(book_in_auction=False):
        resting = Order.objects.filter(symbol=symbol, status__in=RESTING_STATUSES)
        bid = resting.filter(side="buy").aggregate(p=Max("price"))["p"]
        ask = resting.filter(side="sell").aggregate(p=Min("price"))["p"]
        assert bid is None or ask is None or bid < ask, (symbol, bid, ask)


def assert_no_double_processing() -> None:
    """Each order left ``pending`` at most once and finished at most once."""
    left_pending = (
        OrderEvent.objects.filter(from_status=OrderStatus.PENDING)
        .exclude(to_status=OrderStatus.PENDING)
        .values("order_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(left_pending) == []
    finished = (
        OrderEvent.objects.filter(to_status__in=TERMINAL)
        .exclude(from_status__in=TERMINAL)
        .values("order_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert list(finished) == []


def assert_acknowledged_orders_kept(order_ids: Iterable[int]) -> None:
    ids = set(order_ids)
    stored = dict(Order.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert sorted(ids - stored.keys()) == [], "acknowledged orders lost"
    assert sorted(pk for pk, s in stored.items() if s == OrderStatus.PENDING) == []
    placed = Counter(
        OrderRequest.objects.filter(
            order_id__in=ids, kind=OrderRequest.Kind.PLACE, processed_at__isnull=False
        ).values_list("order_id", flat=True)
    )
    assert sorted(pk for pk in ids if placed[pk] != 1) == []


def assert_acknowledged_cancels_applied(order_ids: Iterable[int]) -> None:
    """An acknowledged cancel ends its order (cancelled, or filled before the
    cancel reached the book); it never leaves the order open."""
    still_open = sorted(
        Order.objects.filter(
            pk__in=set(order_ids), status__in=OPEN_STATUSES
        ).values_list("pk", flat=True)
    )
    assert still_open == [], "acknowledged cancels lost"


def rebuilt_books(market_code: str) -> dict[int, list[tuple]]:
    """Each symbol's resting orders as a restarted worker rebuilds them."""
    worker = MatchingWorker(market_code)
    worker.rebuild()
    return {sid: book.orders() for sid, book in worker.books.items()}


def replayed_books(
    market_code: str, originals: Originals | None = None
) -> tuple[dict[int, list[tuple]], Counter]:
    """Every processed request of the market, in processing order, through fresh
    engine books; returns each book's resting orders and the multiset of fills
    ``(buy order, sell order, price ticks, lots)``. Valid for markets without a
    circuit breaker, auctions or expiries (the fault tests' markets)."""
    market = Market.objects.get(code=market_code)
    assert market.circuit_breaker_percent is None
    symbols = {s.pk: s for s in Symbol.objects.filter(market=market)}
    books = {sid: engine.OrderBook() for sid in symbols}
    filled: defaultdict[int, int] = defaultdict(int)
    fills: Counter = Counter()
    requests = (
        OrderRequest.objects.filter(market=market, processed_at__isnull=False)
        .select_related("order")
        # the order the worker took them in: batch by batch (a batch stamps its
        # time on all its requests), in id order within a batch; a request that
        # committed late joins a later batch than higher ids
        .order_by("processed_at", "id")
    )
    for request in requests.iterator(chunk_size=2000):
        order = request.order
        symbol, book = symbols[order.symbol_id], books[order.symbol_id]
        command = _replay_command(request, symbol, book, filled, originals or {})
        for event in book.apply(command):
            if isinstance(event, engine.Fill):
                filled[event.maker_order_id] += event.quantity
                filled[event.taker_order_id] += event.quantity
                buy, sell = (
                    (event.taker_order_id, event.maker_order_id)
                    if event.aggressor is engine.Side.BUY
                    else (event.maker_order_id, event.taker_order_id)
                )
                fills[(buy, sell, event.price, event.quantity)] += 1
    return {sid: book.orders() for sid, book in books.items()}, fills


def _replay_command(
    request: OrderRequest,
    symbol: Symbol,
    book: engine.OrderBook,
    filled: dict[int, int],
    originals: Originals,
) -> engine.Command:
    order = request.order
    if request.kind == OrderRequest.Kind.PLACE:
        command = new_order_command(order, symbol, book)
        if order.pk in originals:
            price, quantity = originals[order.pk]
            command = dataclasses.replace(
                command, price=symbol.to_ticks(price), quantity=symbol.to_lots(quantity)
            )
        return command
    if request.kind == OrderRequest.Kind.AMEND:
        return engine.AmendOrder(
            order.pk,
            quantity=None
            if request.quantity is None
            else symbol.to_lots(request.quantity) - filled[order.pk],
            price=None if request.price is None else symbol.to_ticks(request.price),
            stop_price=None
            if request.stop_price is None
            else symbol.to_ticks(request.stop_price),
        )
    if request.kind == OrderRequest.Kind.EXPIRE:
        return engine.ExpireOrder(order.pk)
    return engine.CancelOrder(order.pk)


def stored_fills(market_code: str) -> Counter:
    fills: Counter = Counter()
    trades = Trade.objects.filter(
        symbol__market__code=market_code, corrected_from__isnull=True
    ).select_related("symbol")
    for trade in trades:
        fills[
            (
                trade.buy_order_id,
                trade.sell_order_id,
                trade.symbol.to_ticks(trade.price),
                trade.symbol.to_lots(trade.quantity),
            )
        ] += 1
    return fills


def book_differences(rebuilt: list[tuple], replayed: list[tuple]) -> dict:
    """What tells two books apart: orders only in one of them, and the first
    position where their priority order differs."""
    only_rebuilt = sorted(set(rebuilt) - set(replayed))
    only_replayed = sorted(set(replayed) - set(rebuilt))
    first = next(
        (i for i, (a, b) in enumerate(zip(rebuilt, replayed, strict=False)) if a != b),
        None,
    )
    return {
        "only_rebuilt": only_rebuilt[:10],
        "only_replayed": only_replayed[:10],
        "first_difference": None
        if first is None
        else (first, rebuilt[first : first + 3], replayed[first : first + 3]),
    }


def assert_rebuilt_book_equals_replay(
    market_code: str, originals: Originals | None = None
) -> None:
    replayed, replayed_fills = replayed_books(market_code, originals)
    rebuilt = rebuilt_books(market_code)
    for symbol_id, orders in rebuilt.items():
        other = replayed.get(symbol_id, [])
        assert orders == other, book_differences(orders, other)
    stored = stored_fills(market_code)
    assert stored == replayed_fills, {
        "only_stored": sorted((stored - replayed_fills).items())[:10],
        "only_replayed": sorted((replayed_fills - stored).items())[:10],
    }


def assert_invariants(
    market_code: str = "XSX",
    *,
    placed: Iterable[int] = (),
    cancelled: Iterable[int] = (),
    originals: Originals | None = None,
) -> None:
    """Every invariant of the module docstring, over the whole database."""
    assert_inbox_drained()
    assert_no_negative_available()
    assert_book_not_crossed()
    assert_no_double_processing()
    assert_acknowledged_orders_kept(placed)
    assert_acknowledged_cancels_applied(cancelled)
    assert_trading_consistent()
    assert_rebuilt_book_equals_replay(market_code, originals)
