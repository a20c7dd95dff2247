"""Field validation of orders, independent of the book's state (private).

Each function returns the first failing check's :class:`RejectReason`, or None.
The order of the checks is part of the contract (``docs/engine.md``).
"""

from __future__ import annotations

from exchange.engine.types import (
    NewOrder,
    OrderType,
    PostOnly,
    RejectReason,
    RestoreOrder,
    TimeInForce,
    TriggerRef,
)

__all__ = ["STOP_TYPES", "check_new", "check_restore", "is_lots", "is_ticks"]

_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_MTL = OrderType.MARKET_TO_LIMIT
_STOP = OrderType.STOP
_STOP_LIMIT = OrderType.STOP_LIMIT
_TRAILING = OrderType.TRAILING_STOP
STOP_TYPES = frozenset((_STOP, _STOP_LIMIT, _TRAILING))
_IMMEDIATE = frozenset((TimeInForce.IOC, TimeInForce.FOK))
_NEEDS_PRICE = frozenset((_LIMIT, _STOP_LIMIT))

_BAD_QUANTITY = RejectReason.INVALID_QUANTITY
_BAD_PRICE = RejectReason.INVALID_PRICE
_BAD_STOP = RejectReason.INVALID_STOP
_BAD_TIF = RejectReason.INVALID_TIME_IN_FORCE
_BAD_POST_ONLY = RejectReason.INVALID_POST_ONLY


def is_lots(value: object) -> bool:
    """An ``int`` > 0 (bools and floats are not lots or ticks)."""
    return type(value) is int and value > 0


is_ticks = is_lots


def _check_price(order_type: OrderType, price: int | None) -> RejectReason | None:
    if price is None:
        return _BAD_PRICE if order_type in _NEEDS_PRICE else None
    return None if is_ticks(price) else _BAD_PRICE


def _check_stop_fields(
    order_type: OrderType,
    stop_price: int | None,
    trigger: TriggerRef,
    trail_amount: int | None,
    trail_bps: int | None,
    *,
    restoring: bool,
) -> RejectReason | None:
    if order_type is _STOP or order_type is _STOP_LIMIT:
        if (
            not is_ticks(stop_price)
            or trail_amount is not None
            or trail_bps is not None
        ):
            return _BAD_STOP
        return None
    if order_type is _TRAILING:
        if restoring:
            # The current level; a sell stop may trail at or below zero.
            if type(stop_price) is not int:
                return _BAD_STOP
        elif stop_price is not None:
            return _BAD_STOP
        if (trail_amount is None) == (trail_bps is None):
            return _BAD_STOP
        if trail_amount is not None and not is_ticks(trail_amount):
            return _BAD_STOP
        if trail_bps is not None and not (
            type(trail_bps) is int and 1 <= trail_bps <= 9999
        ):
            return _BAD_STOP
        return None
    if (
        stop_price is not None
        or trail_amount is not None
        or trail_bps is not None
        or trigger is not TriggerRef.LAST
    ):
        return _BAD_STOP
    return None


def _check_time_in_force(
    order_type: OrderType, time_in_force: TimeInForce
) -> RejectReason | None:
    # A stop's time in force is the life of the stop (any); the MARKET it fires
    # as never rests whatever it is, so only a plain MARKET is held to IOC/FOK.
    if order_type is _MARKET:
        return None if time_in_force in _IMMEDIATE else _BAD_TIF
    if order_type is _MTL and time_in_force in _IMMEDIATE:
        return _BAD_TIF
    return None


def _check_min_quantity(min_quantity: int, quantity: int) -> RejectReason | None:
    if type(min_quantity) is not int or not 0 <= min_quantity <= quantity:
        return _BAD_QUANTITY
    return None


def _check_post_only(
    order_type: OrderType, time_in_force: TimeInForce, post_only: PostOnly
) -> RejectReason | None:
    if post_only is not PostOnly.NONE and (
        order_type is not _LIMIT or time_in_force in _IMMEDIATE
    ):
        return _BAD_POST_ONLY
    return None


def check_new(command: NewOrder) -> RejectReason | None:
    """Validate a NewOrder's fields (the quantity is already checked)."""
    order_type = command.order_type
    time_in_force = command.time_in_force
    quantity = command.quantity
    reason = (
        _check_price(order_type, command.price)
        or _check_stop_fields(
            order_type,
            command.stop_price,
            command.trigger,
            command.trail_amount,
            command.trail_bps,
            restoring=False,
        )
        or _check_time_in_force(order_type, time_in_force)
    )
    if reason is not None:
        return reason
    display = command.display_quantity
    if display is not None and (
        order_type is not _LIMIT
        or time_in_force in _IMMEDIATE
        or not is_lots(display)
        or display >= quantity
    ):
        return _BAD_QUANTITY
    return _check_post_only(
        order_type, time_in_force, command.post_only
    ) or _check_min_quantity(command.min_quantity, quantity)


def check_restore(command: RestoreOrder) -> RejectReason | None:
    """Validate a RestoreOrder's fields (the quantity is already checked).

    A LIMIT or MARKET_TO_LIMIT is restored resting (GTC/DAY/GTD, a price);
    STOP, STOP_LIMIT and TRAILING_STOP parked (their stop level given).  A
    MARKET order never rests.
    """
    order_type = command.order_type
    time_in_force = command.time_in_force
    quantity = command.quantity
    parked = order_type in STOP_TYPES
    if not parked:
        if order_type is _MARKET or time_in_force in _IMMEDIATE:
            return _BAD_TIF
        if not is_ticks(command.price):
            return _BAD_PRICE
    reason = (
        _check_price(order_type, command.price)
        or _check_stop_fields(
            order_type,
            command.stop_price,
            command.trigger,
            command.trail_amount,
            command.trail_bps,
            restoring=True,
        )
        or _check_time_in_force(order_type, time_in_force)
    )
    if reason is not None:
        return reason
    display = command.display_quantity
    visible = command.visible
    if parked:
        if display is not None or visible is not None:
            return _BAD_QUANTITY
    elif display is not None:
        # A partly filled iceberg may show all it has left: display >= quantity.
        if not is_lots(display):
            return _BAD_QUANTITY
        if visible is not None and not (
            is_lots(visible) and visible <= min(display, quantity)
        ):
            return _BAD_QUANTITY
    elif visible is not None and visible != quantity:
        return _BAD_QUANTITY
    return _check_min_quantity(command.min_quantity, quantity) or _check_post_only(
        order_type, time_in_force, command.post_only
    )
