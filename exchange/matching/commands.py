"""Engine commands from stored orders, and the value maps between the two."""

import logging
from decimal import Decimal

from exchange import engine
from exchange.models import Symbol
from oms.models import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    Order,
    OrderStatus,
)

logger = logging.getLogger(__name__)


# Keyed by the stored value: ``Order.side`` reads back as a plain ``str``.
_SIDE: dict[str, engine.Side] = {
    Order.Side.BUY: engine.Side.BUY,
    Order.Side.SELL: engine.Side.SELL,
}
_TYPE = {value: engine.OrderType(value) for value in Order.Type.values}
_TIF = {value: engine.TimeInForce(value) for value in Order.TimeInForce.values}
_TRIGGER = {value: engine.TriggerRef(value) for value in Order.Trigger.values}
_POST_ONLY = {value: engine.PostOnly(value) for value in Order.PostOnly.values}
_STP = {value: engine.SelfTrade(value) for value in Order.SelfTrade.values}
#: Engine cancel reasons that end an order as expired rather than cancelled.
_EXPIRED_REASONS = frozenset({engine.CancelReason.EXPIRED})


def book_topic(symbol: Symbol) -> str:
    return f"book.{symbol.identifier}"


def trades_topic(symbol: Symbol) -> str:
    return f"trades.{symbol.identifier}"


def _ticks(symbol: Symbol, price: Decimal | None) -> int | None:
    return None if price is None else symbol.to_ticks(price)


def _lots(symbol: Symbol, quantity: Decimal | None) -> int | None:
    return None if quantity is None else symbol.to_lots(quantity)


def new_order_command(
    order: Order, symbol: Symbol, book: engine.OrderBook
) -> engine.NewOrder:
    """The engine command that enters a stored order. The OMS links both orders of
    an OCO pair; the link is made in the engine by the second to arrive (the batch
    cancels a leg whose partner ended before it arrived: ``_Batch._place``)."""
    return engine.NewOrder(
        order_id=order.pk,
        side=_SIDE[order.side],
        order_type=_TYPE[order.type],
        time_in_force=_TIF[order.time_in_force],
        quantity=symbol.to_lots(order.quantity),
        price=_ticks(symbol, order.price),
        owner=order.account_id,
        stop_price=_ticks(symbol, order.stop_price),
        trigger=_TRIGGER[order.trigger],
        trail_amount=_ticks(symbol, order.trail_amount),
        trail_bps=order.trail_bps,
        display_quantity=_lots(symbol, order.display_quantity),
        post_only=_POST_ONLY[order.post_only],
        min_quantity=symbol.to_lots(order.min_quantity),
        stp=_STP[order.self_trade_prevention],
        oco_with=order.oco_with_id if order.oco_with_id in book else None,
    )


def restore_command(
    order: Order, symbol: Symbol, restored: set[int]
) -> engine.RestoreOrder:
    """The engine command that puts a stored live order back (``restored``: the
    ids already back, so an OCO link is made by the second order of a pair)."""
    waiting = order.status == OrderStatus.WAITING
    return engine.RestoreOrder(
        order_id=order.pk,
        side=_SIDE[order.side],
        price=_ticks(symbol, order.price),
        quantity=symbol.to_lots(order.remaining_quantity),
        owner=order.account_id,
        # On the book every order is a limit (a market-to-limit rest, a fired stop).
        order_type=_TYPE[order.type] if waiting else engine.OrderType.LIMIT,
        time_in_force=_TIF[order.time_in_force],
        stop_price=_ticks(symbol, order.stop_price) if waiting else None,
        trigger=_TRIGGER[order.trigger],
        trail_amount=_ticks(symbol, order.trail_amount) if waiting else None,
        trail_bps=order.trail_bps if waiting else None,
        display_quantity=_lots(symbol, order.display_quantity),
        visible=_lots(symbol, order.visible_quantity),
        post_only=_POST_ONLY[order.post_only],
        min_quantity=symbol.to_lots(order.min_quantity),
        stp=_STP[order.self_trade_prevention],
        oco_with=order.oco_with_id if order.oco_with_id in restored else None,
    )


def oco_orphans(market_id: int) -> set[int]:
    """Ids of the market's live orders whose OCO partner ended other than by the
    pair's own rule: filled, cancelled or expired, but not cancelled *because of*
    this order (reason ``oco``: this one filled or fired first, it rightly lives
    on). A rebuild leaves them out of the book and the next batch cancels them
    (reason ``oco``), so that both legs of a pair never execute. A partner the
    engine rejected at entry never formed a pair."""
    ended = TERMINAL_STATUSES - {OrderStatus.REJECTED}
    return set(
        Order.objects.filter(
            market_id=market_id,
            status__in=LIVE_STATUSES,
            oco_with__status__in=ended,
        )
        .exclude(oco_with__status_reason=engine.CancelReason.OCO.value)
        .values_list("pk", flat=True)
    )
