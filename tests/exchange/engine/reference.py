"""A deliberately naive reference matcher, written from ``docs/engine.md`` only.

The differential test (``test_differential.py``) runs long random command
streams through this and through ``exchange.engine.book.OrderBook`` and
demands identical events after every command and identical books at the end.
So this file is written for obviousness, not speed: every live order sits in
one plain list (resting and parked alike), "the best order" is a linear scan,
nothing is indexed or cached, and no code is shared with ``book.py`` (only the
value types of ``exchange.engine.types`` and, for the uncross, the
equilibrium of ``exchange.engine.auction``, which has its own brute-force
test).

Where the contract leaves a detail open, the reading taken is written next to
the code as "Reading:"; ``test_differential.py`` lists the same points.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from exchange.engine.auction import Equilibrium, equilibrium
from exchange.engine.types import (
    Accepted,
    Amended,
    AmendOrder,
    BandBreached,
    Cancelled,
    CancelOrder,
    CancelReason,
    Event,
    ExpireOrder,
    Fill,
    NewOrder,
    OrderType,
    OrderView,
    PostOnly,
    Rejected,
    RejectReason,
    Replenished,
    Rested,
    RestoreOrder,
    SelfTrade,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    StopMoved,
    TimeInForce,
    Triggered,
    TriggerRef,
    Uncross,
    Waiting,
)

LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
MARKET_TO_LIMIT = OrderType.MARKET_TO_LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING_STOP = OrderType.TRAILING_STOP
STOP_TYPES = (STOP, STOP_LIMIT, TRAILING_STOP)
RESTING_TIFS = (TimeInForce.GTC, TimeInForce.DAY, TimeInForce.GTD)
IMMEDIATE_TIFS = (TimeInForce.IOC, TimeInForce.FOK)


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return type(value) is int


def is_tick(value: object) -> bool:
    """A price: an int > 0 (not a bool)."""
    return type(value) is int and value > 0


class Order:
    """One live order, resting or parked.  Plain mutable record."""

    def __init__(self, **fields: object) -> None:
        self.order_id: int = 0
        self.side: Side = Side.BUY
        self.order_type: OrderType = LIMIT
        self.time_in_force: TimeInForce = TimeInForce.GTC
        self.price: int | None = None
        self.remaining: int = 0
        self.visible: int = 0
        self.owner: int = 0
        self.parked: bool = False
        # Fired by a stop check, waiting in this command's queue (still live:
        # an OCO partner's fill can cancel it before its turn).
        self.queued: bool = False
        # The incoming order being matched was cancelled (OCO) mid-way.
        self.dead: bool = False
        self.stop_price: int | None = None
        self.trigger: TriggerRef = TriggerRef.LAST
        self.trail_amount: int | None = None
        self.trail_bps: int | None = None
        self.display_quantity: int | None = None
        self.post_only: PostOnly = PostOnly.NONE
        self.min_quantity: int = 0
        self.stp: SelfTrade = SelfTrade.NONE
        self.oco_with: int | None = None
        # Time priority on the book (resting) or in the park (parked stops):
        # smaller is older.  Renewed whenever the order "gets priority now".
        self.priority: int = 0
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def limit(self) -> int:
        """The price of an order that rests or matches (only such orders have one
        where this is read)."""
        assert self.price is not None, self
        return self.price

    @property
    def iceberg_display(self) -> int:
        """The display quantity of an iceberg (read only for icebergs)."""
        assert self.display_quantity is not None, self
        return self.display_quantity

    def __repr__(self) -> str:
        return f"Order({vars(self)})"


class ReferenceBook:
    """The naive matcher.  ``apply(command) -> list[Event]``, like the engine."""

    def __init__(self, *, next_trade_id: Callable[[], int] | None = None) -> None:
        self.orders: list[Order] = []  # every live order, resting and parked
        self.last_price: int | None = None
        self.auction = False
        self.band_low: int | None = None
        self.band_high: int | None = None
        self.clock = itertools.count(1)
        self.next_trade_id = (
            itertools.count(1).__next__ if next_trade_id is None else next_trade_id
        )
        # Trailing stops that already moved during the current command.
        self.moved_this_command: set[int] = set()
        # The incoming order being matched (live for OCO: a maker's fill or
        # cancellation cancels a taker linked to it).
        self.in_flight: list[Order] = []

    # ------------------------------------------------------------------
    # Looking things up, the slow way
    # ------------------------------------------------------------------

    def find(self, order_id: int) -> Order | None:
        for order in self.orders:
            if order.order_id == order_id:
                return order
        return None

    def resting(self, side: Side) -> list[Order]:
        """The resting orders of one side, best price first, oldest first."""
        found = [o for o in self.orders if not o.parked and o.side is side]
        if side is Side.BUY:
            found.sort(key=lambda o: (-o.limit, o.priority))
        else:
            found.sort(key=lambda o: (o.limit, o.priority))
        return found

    def parked(self) -> list[Order]:
        """Parked stops, oldest first."""
        found = [o for o in self.orders if o.parked and not o.queued]
        found.sort(key=lambda o: o.priority)
        return found

    def best_price(self, side: Side) -> int | None:
        orders = self.resting(side)
        return orders[0].price if orders else None

    def reference(self, trigger: TriggerRef) -> int | None:
        if trigger is TriggerRef.LAST:
            return self.last_price
        if trigger is TriggerRef.BID:
            return self.best_price(Side.BUY)
        return self.best_price(Side.SELL)

    @staticmethod
    def opposite(side: Side) -> Side:
        return Side.SELL if side is Side.BUY else Side.BUY

    @staticmethod
    def acceptable(taker_side: Side, limit: int | None, maker_price: int) -> bool:
        """Whether a taker with ``limit`` (None: any) may trade at maker_price."""
        if limit is None:
            return True
        if taker_side is Side.BUY:
            return maker_price <= limit
        return maker_price >= limit

    def executable(self, side: Side, limit: int | None) -> int:
        """Quantity a taker could get right now at acceptable prices.

        Hidden iceberg quantity counts; self-trade prevention is ignored.
        Reading: only what matching could reach before the band stops it
        counts, so a FOK or minimum-quantity order never breaches the band.
        """
        total = 0
        for order in self.resting(self.opposite(side)):
            if not self.acceptable(side, limit, order.limit):
                break
            if not self.in_band(order.limit):
                break  # matching would stop here (BandBreached)
            total += order.remaining
        return total

    def stamp(self) -> int:
        return next(self.clock)

    # ------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------

    def apply(self, command: object) -> list[Event]:
        events: list[Event] = []
        self.moved_this_command = set()
        if isinstance(command, NewOrder):
            self.new_order(command, events)
        elif isinstance(command, CancelOrder):
            self.cancel_command(command.order_id, CancelReason.REQUESTED, events)
        elif isinstance(command, ExpireOrder):
            self.cancel_command(command.order_id, CancelReason.EXPIRED, events)
        elif isinstance(command, AmendOrder):
            self.amend(command, events)
        elif isinstance(command, RestoreOrder):
            # Reading: a rebuild neither matches nor fires stops.
            self.restore(command, events)
            return events
        elif isinstance(command, SetAuction):
            if command.on:
                self.auction = True
            elif self.auction:
                # Reading: continuous trading never starts on a crossed book;
                # leaving the auction uncrosses it at the last price.
                if self.crossed():
                    self.uncross(self.last_price, events)
                self.auction = False
        elif isinstance(command, Uncross):
            if command.reference is not None and not is_tick(command.reference):
                events.append(Rejected(0, RejectReason.INVALID_PRICE))
            else:
                self.uncross(command.reference, events)
        elif isinstance(command, SetBand):
            low, high = command.low, command.high
            if (
                (low is not None and not is_tick(low))
                or (high is not None and not is_tick(high))
                or (low is not None and high is not None and low > high)
            ):
                events.append(Rejected(0, RejectReason.INVALID_PRICE))
            else:
                self.band_low, self.band_high = low, high
        elif isinstance(command, SetLastPrice):
            if command.price is not None and not is_tick(command.price):
                events.append(Rejected(0, RejectReason.INVALID_PRICE))
            else:
                self.last_price = command.price
        else:
            raise TypeError(f"not an engine command: {command!r}")
        if not (events and isinstance(events[0], Rejected)):
            self.check_stops(events)
        return events

    # -- validation --------------------------------------------------------

    def stop_fields_error(
        self,
        order_type: OrderType,
        stop_price: object,
        trigger: TriggerRef,
        trail_amount: object,
        trail_bps: object,
        *,
        restoring: bool = False,
    ) -> RejectReason | None:
        """INVALID_STOP for stop fields that do not fit the order type.

        A non-default ``trigger`` counts as a stop field.  A restored trailing
        stop comes back with its current level as ``stop_price`` (any int: a
        sell stop may have trailed to zero or below).
        """
        if order_type in (STOP, STOP_LIMIT):
            if not (is_int(stop_price) and stop_price > 0):  # type: ignore[operator]
                return RejectReason.INVALID_STOP
            if trail_amount is not None or trail_bps is not None:
                return RejectReason.INVALID_STOP
        elif order_type is TRAILING_STOP:
            if restoring:
                if not is_int(stop_price):
                    return RejectReason.INVALID_STOP
            elif stop_price is not None:
                return RejectReason.INVALID_STOP
            if (trail_amount is None) == (trail_bps is None):
                return RejectReason.INVALID_STOP
            if trail_amount is not None and not (
                is_int(trail_amount) and trail_amount > 0  # type: ignore[operator]
            ):
                return RejectReason.INVALID_STOP
            if trail_bps is not None and not (
                is_int(trail_bps) and 1 <= trail_bps <= 9999  # type: ignore[operator]
            ):
                return RejectReason.INVALID_STOP
        elif (
            stop_price is not None
            or trail_amount is not None
            or trail_bps is not None
            or trigger is not TriggerRef.LAST
        ):
            return RejectReason.INVALID_STOP
        return None

    def tif_error(
        self, order_type: OrderType, time_in_force: TimeInForce
    ) -> RejectReason | None:
        if order_type is MARKET:
            if time_in_force not in IMMEDIATE_TIFS:
                return RejectReason.INVALID_TIME_IN_FORCE
        if order_type is MARKET_TO_LIMIT and time_in_force not in RESTING_TIFS:
            return RejectReason.INVALID_TIME_IN_FORCE
        return None

    def price_error(self, order_type: OrderType, price: object) -> RejectReason | None:
        if order_type in (LIMIT, STOP_LIMIT):
            if not (is_int(price) and price > 0):  # type: ignore[operator]
                return RejectReason.INVALID_PRICE
        elif price is not None and not (is_int(price) and price > 0):  # type: ignore[operator]
            return RejectReason.INVALID_PRICE
        return None

    def validate(self, c: NewOrder) -> RejectReason | None:
        """The first failing check, or None.

        The contract's order: duplicate id, quantity, price, stop fields,
        time in force, display, post-only, minimum quantity, OCO, auction,
        trailing reference (then, in new_order, post-only would-take).
        """
        if self.find(c.order_id) is not None:
            return RejectReason.DUPLICATE_ORDER_ID
        if not (is_int(c.quantity) and c.quantity > 0):
            return RejectReason.INVALID_QUANTITY
        error = self.price_error(c.order_type, c.price)
        if error:
            return error
        error = self.stop_fields_error(
            c.order_type, c.stop_price, c.trigger, c.trail_amount, c.trail_bps
        ) or self.tif_error(c.order_type, c.time_in_force)
        if error:
            return error
        resting_limit = c.order_type is LIMIT and c.time_in_force in RESTING_TIFS
        if c.display_quantity is not None:
            if not resting_limit:
                return RejectReason.INVALID_QUANTITY
            if not (is_int(c.display_quantity) and 0 < c.display_quantity < c.quantity):
                return RejectReason.INVALID_QUANTITY
        if c.post_only is not PostOnly.NONE and not resting_limit:
            return RejectReason.INVALID_POST_ONLY
        if not (is_int(c.min_quantity) and 0 <= c.min_quantity <= c.quantity):
            return RejectReason.INVALID_QUANTITY
        if c.oco_with is not None:
            partner = self.find(c.oco_with)
            if (
                c.owner == 0
                or partner is None
                or partner.owner != c.owner
                or partner.oco_with is not None
            ):
                return RejectReason.INVALID_OCO
        if self.auction and (
            c.order_type in (MARKET, MARKET_TO_LIMIT)
            or (c.order_type is LIMIT and c.time_in_force in IMMEDIATE_TIFS)
            or c.post_only is PostOnly.REPRICE
        ):
            # Stops (whatever their time in force) park: they never fire in
            # an auction.
            return RejectReason.NOT_ALLOWED_IN_AUCTION
        if c.order_type is TRAILING_STOP and self.reference(c.trigger) is None:
            return RejectReason.NO_REFERENCE_PRICE
        return None

    # -- new orders -----------------------------------------------------------

    def new_order(self, c: NewOrder, events: list[Event]) -> None:
        error = self.validate(c)
        if error is None and c.post_only is not PostOnly.NONE and not self.auction:
            price = self.post_only_price(c.side, c.price, c.post_only)  # type: ignore[arg-type]
            if price is None:
                error = RejectReason.POST_ONLY_WOULD_TAKE
        if error is not None:
            events.append(Rejected(c.order_id, error))
            return
        events.append(Accepted(c.order_id))
        order = Order(
            order_id=c.order_id,
            side=c.side,
            order_type=c.order_type,
            time_in_force=c.time_in_force,
            price=c.price,
            remaining=c.quantity,
            owner=c.owner,
            stop_price=c.stop_price,
            trigger=c.trigger,
            trail_amount=c.trail_amount,
            trail_bps=c.trail_bps,
            display_quantity=c.display_quantity,
            post_only=c.post_only,
            min_quantity=c.min_quantity,
            stp=c.stp,
        )
        if c.oco_with is not None:
            partner = self.find(c.oco_with)
            assert partner is not None
            partner.oco_with = order.order_id
            order.oco_with = partner.order_id
        if order.order_type in STOP_TYPES:
            if order.order_type is TRAILING_STOP:
                ref = self.reference(order.trigger)
                assert ref is not None
                order.stop_price = self.trail_level(order, ref)
            order.parked = True
            order.priority = self.stamp()
            self.orders.append(order)
            events.append(Waiting(order.order_id, order.stop_price))  # type: ignore[arg-type]
            return
        if order.post_only is not PostOnly.NONE and not self.auction:
            order.price = self.post_only_price(order.side, order.price, order.post_only)  # type: ignore[arg-type]
        self.take(order, events, entry=True)

    def post_only_price(self, side: Side, price: int, mode: PostOnly) -> int | None:
        """The price a post-only order rests at, or None if it must be rejected."""
        best = self.best_price(self.opposite(side))
        if best is None or not self.acceptable(side, price, best):
            return price  # would not execute
        if mode is PostOnly.REJECT:
            return None
        new_price = best - 1 if side is Side.BUY else best + 1
        return new_price if new_price > 0 else None

    def trail_level(self, order: Order, ref: int) -> int:
        """The stop level a trailing stop gets from reference ``ref``."""
        if order.trail_amount is not None:
            distance = order.trail_amount
        else:
            distance = max(1, ref * order.trail_bps // 10000)  # type: ignore[operator]
        return ref - distance if order.side is Side.SELL else ref + distance

    # -- matching ---------------------------------------------------------------

    def take(self, order: Order, events: list[Event], *, entry: bool) -> None:
        """Match an incoming (or re-entered, or fired) order, then deal with the rest.

        ``order`` is not in ``self.orders`` while it matches but in
        ``self.in_flight``.  ``entry`` is True when FOK / minimum-quantity
        checks apply (a new order, a fired stop); an amend re-entry of a
        resting limit has neither.
        """
        self.in_flight.append(order)
        try:
            self.take_in_flight(order, events, entry=entry)
        finally:
            self.in_flight.remove(order)

    def take_in_flight(self, order: Order, events: list[Event], *, entry: bool) -> None:
        limit = order.price  # the limit, or a market order's protection (or None)
        if self.auction:
            # Only resting-TIF limits get here in an auction (validated).
            self.rest(order, events)
            return
        if order.order_type is MARKET_TO_LIMIT:
            # It takes only the best opposite price, which becomes its limit.
            makers = self.resting(self.opposite(order.side))
            if makers and self.acceptable(order.side, limit, makers[0].limit):
                limit = order.price = makers[0].price
        if entry and order.time_in_force is TimeInForce.FOK:
            if self.executable(order.side, limit) < order.remaining:
                self.cancel_taker(order, CancelReason.FOK_UNFILLABLE, events)
                return
        if entry and order.min_quantity > 0:
            if self.executable(order.side, limit) < order.min_quantity:
                self.cancel_taker(order, CancelReason.MIN_QUANTITY, events)
                return
        first_fill_price = None
        while order.remaining > 0:
            makers = self.resting(self.opposite(order.side))
            if not makers:
                break
            maker = makers[0]
            if not self.acceptable(order.side, limit, maker.limit):
                break
            if (
                order.owner != 0
                and maker.owner == order.owner
                and order.stp is not SelfTrade.NONE
            ):
                if order.stp is SelfTrade.CANCEL_NEWEST:
                    self.cancel_taker(order, CancelReason.SELF_TRADE, events)
                    return
                self.remove(maker, CancelReason.SELF_TRADE, events)
                if order.dead:
                    return  # the maker was its OCO partner
                if order.stp is SelfTrade.CANCEL_BOTH:
                    self.cancel_taker(order, CancelReason.SELF_TRADE, events)
                    return
                continue
            if not self.in_band(maker.limit):
                events.append(BandBreached(order.order_id, maker.limit))
                self.auction = True
                break
            if first_fill_price is None:
                first_fill_price = maker.price
            self.fill(maker, order, events)
            if order.dead:
                return  # its OCO partner was the maker just filled
        if order.remaining == 0:
            return
        if order.order_type is MARKET:
            self.cancel_taker(order, CancelReason.MARKET_REMAINDER, events)
        elif order.order_type is MARKET_TO_LIMIT:
            if first_fill_price is None:
                self.cancel_taker(order, CancelReason.MARKET_REMAINDER, events)
            else:
                order.order_type = LIMIT
                order.price = first_fill_price
                self.rest(order, events)
        elif order.time_in_force in IMMEDIATE_TIFS:
            self.cancel_taker(order, CancelReason.IOC_REMAINDER, events)
        else:
            self.rest(order, events)

    def in_band(self, price: int) -> bool:
        if self.band_low is not None and price < self.band_low:
            return False
        return not (self.band_high is not None and price > self.band_high)

    def fill(self, maker: Order, taker: Order, events: list[Event]) -> None:
        quantity = min(taker.remaining, maker.visible)
        maker.remaining -= quantity
        maker.visible -= quantity
        taker.remaining -= quantity
        events.append(
            Fill(
                trade_id=self.next_trade_id(),
                maker_order_id=maker.order_id,
                taker_order_id=taker.order_id,
                maker_owner=maker.owner,
                taker_owner=taker.owner,
                aggressor=taker.side,
                price=maker.price,  # type: ignore[arg-type]
                quantity=quantity,
                maker_remaining=maker.remaining,
                taker_remaining=taker.remaining,
            )
        )
        self.last_price = maker.price
        if maker.remaining == 0:
            self.orders.remove(maker)
        # Reading: the maker's OCO partner goes first, then the taker's.
        self.oco_cancel(maker, events)
        self.oco_cancel(taker, events)
        if maker in self.orders and maker.visible == 0:
            self.replenish(maker, events)

    def replenish(self, order: Order, events: list[Event]) -> None:
        order.visible = min(order.iceberg_display, order.remaining)
        order.priority = self.stamp()
        events.append(
            Replenished(
                order.order_id, order.side, order.limit, order.remaining, order.visible
            )
        )

    def rest(self, order: Order, events: list[Event]) -> None:
        order.parked = False
        order.min_quantity = 0  # it applied on entry only
        if order.display_quantity is not None:
            order.visible = min(order.display_quantity, order.remaining)
        else:
            order.visible = order.remaining
        order.priority = self.stamp()
        self.orders.append(order)
        events.append(
            Rested(
                order.order_id,
                order.side,
                order.price,  # type: ignore[arg-type]
                order.remaining,
                visible=order.visible,
            )
        )

    def cancel_taker(
        self, order: Order, reason: CancelReason, events: list[Event]
    ) -> None:
        """The in-flight order's remainder never rests."""
        order.dead = True
        events.append(Cancelled(order.order_id, order.remaining, reason))
        self.oco_cancel(order, events)

    def remove(self, order: Order, reason: CancelReason, events: list[Event]) -> None:
        """Take a live order off the book / out of the park (or end it in flight)."""
        if order in self.in_flight:
            self.cancel_taker(order, reason, events)
            return
        self.orders.remove(order)
        events.append(Cancelled(order.order_id, order.remaining, reason))
        self.oco_cancel(order, events)

    def oco_cancel(self, order: Order, events: list[Event]) -> None:
        """``order`` was filled, fired, cancelled or expired: drop its partner."""
        if order.oco_with is None:
            return
        partner = self.find(order.oco_with)
        if partner is None:
            for taker in self.in_flight:
                if taker.order_id == order.oco_with and not taker.dead:
                    partner = taker
        order.oco_with = None
        if partner is None or partner.oco_with != order.order_id:
            return
        partner.oco_with = None
        self.remove(partner, CancelReason.OCO, events)

    # -- cancel / expire ------------------------------------------------------------

    def cancel_command(
        self, order_id: int, reason: CancelReason, events: list[Event]
    ) -> None:
        order = self.find(order_id)
        if order is None:
            events.append(Rejected(order_id, RejectReason.UNKNOWN_ORDER))
            return
        self.remove(order, reason, events)

    # -- amend -----------------------------------------------------------------

    def amend(self, c: AmendOrder, events: list[Event]) -> None:
        order = self.find(c.order_id)
        if order is None:
            events.append(Rejected(c.order_id, RejectReason.UNKNOWN_ORDER))
            return
        if not order.parked and order.order_type is not LIMIT:
            events.append(Rejected(c.order_id, RejectReason.NOT_AMENDABLE))
            return
        if c.quantity is not None and not (is_int(c.quantity) and c.quantity >= 1):
            events.append(Rejected(c.order_id, RejectReason.INVALID_QUANTITY))
            return
        if c.price is not None and not (is_int(c.price) and c.price > 0):
            events.append(Rejected(c.order_id, RejectReason.INVALID_PRICE))
            return
        if c.stop_price is not None:
            if not order.parked or order.order_type is TRAILING_STOP:
                events.append(Rejected(c.order_id, RejectReason.NOT_AMENDABLE))
                return
            if not (is_int(c.stop_price) and c.stop_price > 0):
                events.append(Rejected(c.order_id, RejectReason.INVALID_STOP))
                return
        if order.parked:
            if c.quantity is not None and c.quantity < order.min_quantity:
                # Reading: as on entry, a minimum above the quantity is invalid.
                events.append(Rejected(c.order_id, RejectReason.INVALID_QUANTITY))
                return
            if c.quantity is not None:
                order.remaining = c.quantity
            if c.price is not None:
                order.price = c.price
            if c.stop_price is not None:
                order.stop_price = c.stop_price
            events.append(
                Amended(
                    order.order_id,
                    order.price,
                    order.remaining,
                    0,
                    order.stop_price,
                    True,
                )
            )
            return
        quantity = order.remaining if c.quantity is None else c.quantity
        price = order.price if c.price is None else c.price
        if price == order.price and quantity <= order.remaining:
            order.remaining = quantity
            order.visible = min(order.visible, quantity)
            events.append(
                Amended(order.order_id, price, quantity, order.visible, None, True)
            )
            return
        # Re-entered as if new: off the book, then matched / rested.
        new_price = price
        if order.post_only is not PostOnly.NONE and not self.auction:
            new_price = self.post_only_price(order.side, price, order.post_only)  # type: ignore[arg-type]
            if new_price is None:
                events.append(Rejected(c.order_id, RejectReason.POST_ONLY_WOULD_TAKE))
                return
        self.orders.remove(order)
        order.price = new_price
        order.remaining = quantity
        if order.display_quantity is not None:
            order.visible = min(order.display_quantity, quantity)
        else:
            order.visible = quantity
        events.append(
            Amended(order.order_id, new_price, quantity, order.visible, None, False)
        )
        self.take(order, events, entry=False)

    # -- restore -----------------------------------------------------------------

    def restore(self, c: RestoreOrder, events: list[Event]) -> None:
        error = self.restore_error(c)
        if error is not None:
            events.append(Rejected(c.order_id, error))
            return
        order = Order(
            order_id=c.order_id,
            side=c.side,
            order_type=c.order_type,
            time_in_force=c.time_in_force,
            price=c.price,
            remaining=c.quantity,
            owner=c.owner,
            stop_price=c.stop_price,
            trigger=c.trigger,
            trail_amount=c.trail_amount,
            trail_bps=c.trail_bps,
            display_quantity=c.display_quantity,
            post_only=c.post_only,
            min_quantity=c.min_quantity,
            stp=c.stp,
            priority=self.stamp(),
        )
        if c.oco_with is not None:
            # Linked if the partner is back already; if not, restored unlinked
            # and the partner's restore (naming this one) links the two.
            partner = self.find(c.oco_with)
            if partner is not None:
                partner.oco_with = order.order_id
                order.oco_with = partner.order_id
        if order.order_type in STOP_TYPES:
            order.parked = True
            self.orders.append(order)
            events.append(Waiting(order.order_id, order.stop_price))  # type: ignore[arg-type]
            return
        order.order_type = LIMIT  # a MARKET_TO_LIMIT remainder rests as a limit
        order.min_quantity = 0  # it applies on entry (or trigger) only
        if c.visible is not None:
            order.visible = c.visible
        elif c.display_quantity is not None:
            order.visible = min(c.display_quantity, c.quantity)
        else:
            order.visible = c.quantity
        self.orders.append(order)
        events.append(
            Rested(
                order.order_id,
                order.side,
                order.limit,
                order.remaining,
                visible=order.visible,
            )
        )

    def restore_error(self, c: RestoreOrder) -> RejectReason | None:
        """Reading: the NewOrder checks in the same order, with what a stored
        order may legitimately look like (a trailing stop's current level; an
        iceberg showing all it has left, ``display >= quantity``)."""
        if self.find(c.order_id) is not None:
            return RejectReason.DUPLICATE_ORDER_ID
        if not (is_int(c.quantity) and c.quantity > 0):
            return RejectReason.INVALID_QUANTITY
        parked = c.order_type in STOP_TYPES
        if not parked:
            # Only limits rest (a MARKET_TO_LIMIT remainder rests as a limit).
            if c.order_type is MARKET or c.time_in_force in IMMEDIATE_TIFS:
                return RejectReason.INVALID_TIME_IN_FORCE
            if not (is_int(c.price) and c.price > 0):  # type: ignore[operator]
                return RejectReason.INVALID_PRICE
        error = (
            self.price_error(c.order_type, c.price)
            or self.stop_fields_error(
                c.order_type,
                c.stop_price,
                c.trigger,
                c.trail_amount,
                c.trail_bps,
                restoring=True,
            )
            or self.tif_error(c.order_type, c.time_in_force)
        )
        if error:
            return error
        if parked:
            if c.display_quantity is not None or c.visible is not None:
                return RejectReason.INVALID_QUANTITY
        elif c.display_quantity is not None:
            if not (is_int(c.display_quantity) and c.display_quantity > 0):
                return RejectReason.INVALID_QUANTITY
            if c.visible is not None and not (
                is_int(c.visible)
                and 0 < c.visible <= min(c.display_quantity, c.quantity)
            ):
                return RejectReason.INVALID_QUANTITY
        elif c.visible is not None and c.visible != c.quantity:
            return RejectReason.INVALID_QUANTITY
        if not (is_int(c.min_quantity) and 0 <= c.min_quantity <= c.quantity):
            return RejectReason.INVALID_QUANTITY
        if c.post_only is not PostOnly.NONE and (
            c.order_type is not LIMIT or c.time_in_force not in RESTING_TIFS
        ):
            return RejectReason.INVALID_POST_ONLY
        if c.oco_with is not None:
            partner = self.find(c.oco_with)
            if c.owner == 0 or c.oco_with == c.order_id:
                return RejectReason.INVALID_OCO
            if partner is not None and (
                partner.owner != c.owner or partner.oco_with is not None
            ):
                return RejectReason.INVALID_OCO
        if not parked and not self.auction:
            best = self.best_price(self.opposite(c.side))
            if best is not None and self.acceptable(c.side, c.price, best):
                return RejectReason.INVALID_PRICE
        return None

    # -- auction ---------------------------------------------------------------------

    def indicative(self, reference: int | None = None) -> Equilibrium | None:
        return equilibrium(
            [(o.limit, o.remaining) for o in self.resting(Side.BUY)],
            [(o.limit, o.remaining) for o in self.resting(Side.SELL)],
            reference,
        )

    def crossed(self) -> bool:
        bid, ask = self.best_price(Side.BUY), self.best_price(Side.SELL)
        return bid is not None and ask is not None and bid >= ask

    def uncross(self, reference: int | None, events: list[Event]) -> None:
        """Execute the equilibrium; again if an OCO cancellation left the book
        crossed ("after Uncross the book is uncrossed")."""
        while True:
            found = self.indicative(reference)
            if found is None:
                return
            self.execute_uncross(found.price, events)
            if not self.crossed():
                return

    def execute_uncross(self, price: int, events: list[Event]) -> None:
        while True:
            # The queues, from the live book each time (an OCO cancel may
            # have taken an order out).
            buys = [o for o in self.resting(Side.BUY) if o.limit >= price]
            sells = [o for o in self.resting(Side.SELL) if o.limit <= price]
            if not buys or not sells:
                return
            buy, sell = buys[0], sells[0]
            quantity = min(buy.remaining, sell.remaining)
            maker, taker = (buy, sell) if buy.priority < sell.priority else (sell, buy)
            for order in (buy, sell):
                order.remaining -= quantity
                order.visible = max(0, order.visible - quantity)
            events.append(
                Fill(
                    trade_id=self.next_trade_id(),
                    maker_order_id=maker.order_id,
                    taker_order_id=taker.order_id,
                    maker_owner=maker.owner,
                    taker_owner=taker.owner,
                    aggressor=None,
                    price=price,
                    quantity=quantity,
                    maker_remaining=maker.remaining,
                    taker_remaining=taker.remaining,
                )
            )
            self.last_price = price
            for order in (maker, taker):
                if order.remaining == 0:
                    self.orders.remove(order)
            self.oco_cancel(maker, events)
            self.oco_cancel(taker, events)
            for order in (maker, taker):
                if order in self.orders and order.visible == 0:
                    self.replenish(order, events)

    # -- stops ---------------------------------------------------------------------

    def triggerable(self, order: Order) -> int | None:
        """The reference price if the parked stop fires now, else None."""
        ref = self.reference(order.trigger)
        if ref is None:
            return None
        if order.side is Side.BUY and ref >= order.stop_price:  # type: ignore[operator]
            return ref
        if order.side is Side.SELL and ref <= order.stop_price:  # type: ignore[operator]
            return ref
        return None

    def trail(self, events: list[Event]) -> None:
        """Move trailing stops in the client's favour, once per order per command."""
        for order in self.parked():
            if order.order_type is not TRAILING_STOP:
                continue
            if order.order_id in self.moved_this_command:
                continue
            ref = self.reference(order.trigger)
            if ref is None:
                continue
            level = self.trail_level(order, ref)
            if order.side is Side.SELL and level > order.stop_price:  # type: ignore[operator]
                better = True
            elif order.side is Side.BUY and level < order.stop_price:  # type: ignore[operator]
                better = True
            else:
                better = False
            if better:
                order.stop_price = level
                self.moved_this_command.add(order.order_id)
                events.append(StopMoved(order.order_id, level))

    def check_stops(self, events: list[Event]) -> None:
        """Fire triggerable stops, then cascade.

        A check takes every triggerable parked stop out of the park, oldest
        acceptance first, into a queue.  Queued stops are processed one at a
        time, each as a new order; after each, the check runs again and adds
        what it fires to the back of the queue.  Nothing fires in an auction.
        """
        queue: list[tuple[Order, int]] = []
        self.trail(events)
        self.fire_check(queue)
        while queue:
            order, ref = queue.pop(0)
            if order not in self.orders:
                continue  # cancelled by an OCO partner while it waited
            if self.auction:
                # Reading: a band breach switched the book to auction; the
                # stops still waiting have not fired and stay parked.
                order.queued = False
                continue
            self.orders.remove(order)
            order.parked = order.queued = False
            events.append(Triggered(order.order_id, ref))
            self.oco_cancel(order, events)
            if order.order_type is STOP_LIMIT:
                order.order_type = LIMIT
            else:
                order.order_type = MARKET
                if order.time_in_force is not TimeInForce.FOK:
                    order.time_in_force = TimeInForce.IOC
            # From here on a plain order: no stop fields left.
            order.stop_price = order.trail_amount = order.trail_bps = None
            order.trigger = TriggerRef.LAST
            self.take(order, events, entry=True)
            self.trail(events)
            self.fire_check(queue)

    def fire_check(self, queue: list[tuple[Order, int]]) -> None:
        if self.auction:
            return
        for order in self.parked():
            ref = self.triggerable(order)
            if ref is not None:
                order.queued = True
                queue.append((order, ref))

    # ------------------------------------------------------------------
    # Queries, in the engine's shapes
    # ------------------------------------------------------------------

    def depth(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Per side, best first: (price, visible quantity, order count)."""
        result = []
        for side in (Side.BUY, Side.SELL):
            levels: list[tuple[int, int, int]] = []
            for order in self.resting(side):
                if levels and levels[-1][0] == order.price:
                    price, quantity, count = levels[-1]
                    levels[-1] = (price, quantity + order.visible, count + 1)
                else:
                    levels.append((order.price, order.visible, 1))  # type: ignore[arg-type]
            result.append(levels)
        return result[0], result[1]

    def snapshot(self) -> list[OrderView]:
        """Resting orders in time priority across the whole book (the order
        they took their places: restoring them in this order keeps every
        priority, also between the sides), then parked stops, oldest first."""
        views = []
        resting = sorted(
            (o for o in self.orders if not o.parked), key=lambda o: o.priority
        )
        for order in [*resting, *self.parked()]:
            views.append(
                OrderView(
                    order_id=order.order_id,
                    side=order.side,
                    order_type=order.order_type,
                    time_in_force=order.time_in_force,
                    price=order.price,
                    remaining=order.remaining,
                    visible=None if order.parked else order.visible,
                    owner=order.owner,
                    parked=order.parked,
                    stop_price=order.stop_price,
                    trigger=order.trigger,
                    trail_amount=order.trail_amount,
                    trail_bps=order.trail_bps,
                    display_quantity=order.display_quantity,
                    post_only=order.post_only,
                    min_quantity=order.min_quantity,
                    stp=order.stp,
                    oco_with=order.oco_with,
                )
            )
        return views
