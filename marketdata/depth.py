"""Depth by order (market-by-order) and execution reports, kept by the matching batches.

:func:`depth_apply` runs inside every matching batch transaction (a batch hook). It
returns, to publish after commit:

- one ``orders_book.<MARKET:CODE>`` message per symbol whose resting orders changed:
  the changed orders ``[{"id", "side", "price", "quantity"}]`` with the remaining
  quantity, ``"0"`` for an order that left the book. Orders that never rested (a
  taker filled or cancelled in its own batch) do not appear, nor does an order that
  entered and left the book within one batch.
- one ``executions.acct.<account id>`` message per fill side: the owner's execution
  report.

Both topics' sequences advance in the batch transaction, so a snapshot read in one
transaction (:func:`orders_book_snapshot`, :func:`executions_snapshot`) carries the
exact sequence it reflects.

A client keeps the book by order from the snapshot and the updates: a known id takes
the new quantity (and leaves at ``"0"``), an unknown one joins the back of its price
level; updates list orders in time priority, so the order within each level stays
the matching engine's. Icebergs do not exist yet; when they do, only an order's
visible quantity belongs here.
"""

from collections import Counter
from decimal import Decimal
from typing import Any

from django.db.models import Q

from exchange.matching import BatchOutcome
from exchange.models import Symbol, Trade
from exchange.selectors import snapshot_transaction
from exchange.streams import Message, stream_advance, stream_current, stream_message
from marketdata.topics import AccountTopic, Snapshot, register, symbol_or_error
from oms.models import RESTING_STATUSES, Order

#: Execution reports an ``executions`` snapshot carries per account.
EXECUTIONS_SNAPSHOT_SIZE = 50
REMOVED = "0"


def orders_book_topic(symbol: Symbol) -> str:
    return f"orders_book.{symbol.identifier}"


def executions_topic(account_id: int) -> str:
    return f"executions.acct.{account_id}"


# -- wire -----------------------------------------------------------------------------


def resting_order_to_wire(
    symbol: Symbol, order_id: int, side: str, price: Decimal, quantity: Decimal | None
) -> dict[str, Any]:
    """An order on the book; ``quantity`` None means it left the book (``"0"``)."""
    return {
        "id": order_id,
        "side": side,
        "price": str(symbol.format_price(price)),
        "quantity": REMOVED
        if quantity is None
        else str(symbol.asset.quantize(quantity)),
    }


def executions_to_wire(trade: Trade) -> list[tuple[int, dict[str, Any]]]:
    """The trade's two execution reports as (account id, report), buyer first; the
    trade's symbol (with market, asset, currency) must be loaded."""
    symbol = trade.symbol
    price = str(symbol.format_price(trade.price))
    quantity = str(symbol.asset.quantize(trade.quantity))
    executed_at = trade.executed_at.isoformat()
    reports = []
    for side, account_id, order_id, fee in (
        (Order.Side.BUY, trade.buyer_id, trade.buy_order_id, trade.buyer_fee),
        (Order.Side.SELL, trade.seller_id, trade.sell_order_id, trade.seller_fee),
    ):
        reports.append(
            (
                account_id,
                {
                    "trade_id": trade.pk,
                    "order_id": order_id,
                    "account": account_id,
                    "symbol": symbol.identifier,
                    "side": side.value,
                    "price": price,
                    "quantity": quantity,
                    "fee": str(symbol.currency.quantize(fee)),
                    "liquidity": "taker" if trade.aggressor_side == side else "maker",
                    "executed_at": executed_at,
                },
            )
        )
    return reports


# -- the batch hook -------------------------------------------------------------------


def depth_apply(outcome: BatchOutcome) -> list[Message]:
    """Return the batch's ``orders_book`` and ``executions`` messages (advancing their
    sequences). Precondition: inside the batch transaction, after the balance locks;
    the batch's requests are already marked processed."""
    return _orders_book_messages(outcome) + _executions_messages(outcome.trades)


def _orders_book_messages(outcome: BatchOutcome) -> list[Message]:
    # An order that entered the book and left it within this batch was never
    # visible to anyone: leave it out.
    changed: dict[int, list[Order]] = {}
    for order in outcome.orders:
        if order.status in RESTING_STATUSES or order.pk in outcome.left_book:
            changed.setdefault(order.symbol_id, []).append(order)
    if not changed:
        return []
    symbols = {symbol_id: changed[symbol_id][0].symbol for symbol_id in changed}
    next_seq = stream_advance(
        {orders_book_topic(symbol): 1 for symbol in symbols.values()}
    )
    messages = []
    for symbol_id in sorted(changed):
        symbol = symbols[symbol_id]
        orders = sorted(changed[symbol_id], key=lambda o: (o.priority or 0, o.pk))
        data = [
            resting_order_to_wire(
                symbol,
                order.pk,
                order.side,
                order.price,
                None if order.is_terminal else shown_quantity(order),
            )
            for order in orders
            if order.price is not None
        ]
        topic = orders_book_topic(symbol)
        messages.append(stream_message(topic, next_seq[topic], data))
    return messages


def shown_quantity(order: Order) -> Decimal:
    """What the book shows of a resting order: an iceberg's visible part."""
    if order.visible_quantity is not None:
        return order.visible_quantity
    return order.remaining_quantity


def _executions_messages(trades: list[Trade]) -> list[Message]:
    reports = [report for trade in trades for report in executions_to_wire(trade)]
    if not reports:
        return []
    next_seq = stream_advance(
        Counter(executions_topic(account_id) for account_id, _ in reports)
    )
    messages = []
    for account_id, report in reports:
        topic = executions_topic(account_id)
        messages.append(
            stream_message(topic, next_seq[topic], report, account=account_id)
        )
        next_seq[topic] += 1
    return messages


# -- reads ----------------------------------------------------------------------------


def orders_book_snapshot(symbol: Symbol) -> dict[str, Any]:
    """Every resting order of ``symbol``, best price first and in time priority
    within a level, with the ``orders_book`` sequence it reflects."""
    topic = orders_book_topic(symbol)
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        # Only priced orders rest in the book (a market order never does).
        rows: list[tuple[Any, ...]] = list(
            Order.objects.filter(
                symbol=symbol, status__in=RESTING_STATUSES, price__isnull=False
            ).values_list(
                "id",
                "side",
                "price",
                "quantity",
                "filled_quantity",
                "priority",
                "visible_quantity",
            )
        )
    sides: dict[str, list[dict[str, Any]]] = {Order.Side.BUY: [], Order.Side.SELL: []}
    best_first: dict[str, int] = {Order.Side.BUY: -1, Order.Side.SELL: 1}
    rows.sort(key=lambda r: (best_first[r[1]] * r[2], r[5] or 0, r[0]))
    for order_id, side, price, quantity, filled, _priority, visible in rows:
        shown = quantity - filled if visible is None else visible
        sides[side].append(resting_order_to_wire(symbol, order_id, side, price, shown))
    return {
        "symbol": symbol.identifier,
        "seq": seq,
        "bids": sides[Order.Side.BUY],
        "asks": sides[Order.Side.SELL],
    }


def executions_list(
    account_id: int, limit: int = EXECUTIONS_SNAPSHOT_SIZE
) -> list[dict[str, Any]]:
    """The account's latest ``limit`` execution reports, newest first."""
    trades = (
        Trade.objects.filter(Q(buyer_id=account_id) | Q(seller_id=account_id))
        .select_related("symbol__market", "symbol__asset", "symbol__currency")
        .order_by("-id")[:limit]
    )
    reports = [
        report
        for trade in trades
        for owner, report in executions_to_wire(trade)
        if owner == account_id
    ]
    return reports[:limit]


# -- stream topics --------------------------------------------------------------------


class OrdersBookTopic:
    """``orders_book.<MARKET:CODE>`` (public): the book order by order."""

    def upstreams(self, user: Any, argument: str) -> list[str]:
        return [orders_book_topic(symbol_or_error("orders_book", argument))]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = orders_book_snapshot(symbol_or_error("orders_book", argument))
        return Snapshot(seq=data.pop("seq"), data=data)


class ExecutionsTopic(AccountTopic):
    """``executions`` (private): the fills of the user's accounts' orders."""

    kind = "executions"

    def topic_of(self, account_id: int) -> str:
        return executions_topic(account_id)

    def data(self, account_ids: list[int]) -> list[dict[str, Any]]:
        """Each account's latest fills, newest first overall."""
        reports = [
            report
            for account_id in account_ids
            for report in executions_list(account_id)
        ]
        return sorted(reports, key=lambda report: -report["trade_id"])


register("orders_book", OrdersBookTopic())
register("executions", ExecutionsTopic())
