"""One batch: applying requests to the books and turning engine events into order state changes and fills."""

import logging
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from exchange import engine
from exchange.matching.booking import BatchBooking
from exchange.matching.commands import (
    _EXPIRED_REASONS,
    _SIDE,
    _ticks,
    new_order_command,
)
from exchange.matching.state import _Fill, _OrderState
from exchange.models import Market, Symbol
from exchange.trading import MarketTradingStates
from oms.models import (
    LIVE_STATUSES,
    OPEN_STATUSES,
    RESTING_STATUSES,
    Order,
    OrderRequest,
    OrderStatus,
)

if TYPE_CHECKING:
    from exchange.matching.worker import MatchingWorker

logger = logging.getLogger(__name__)


#: The price levels a batch touched on one book: (side, price in ticks).
_Levels = set[tuple[engine.Side, int]]


class _Batch(BatchBooking):
    """The outcome of one batch of requests, persisted in the caller's transaction."""

    def __init__(
        self,
        worker: "MatchingWorker",
        market: Market,
        requests: list[OrderRequest],
        states: MarketTradingStates,
        now: datetime,
    ) -> None:
        self.worker = worker
        self.market = market
        self.requests = requests
        #: The trading state in effect for each symbol.
        self.trading = states
        self.now = now
        self.states: dict[int, _OrderState] = {}
        self.fills: list[_Fill] = []
        self.touched_levels: defaultdict[int, set[tuple[engine.Side, int]]] = (
            defaultdict(set)
        )
        #: Symbols whose dynamic price band stopped a trade: the price it would have
        #: traded at.
        self.band_breaches: dict[int, int] = {}
        #: Symbols whose book entered (True) or left (False) auction mode.
        self.auction_changes: dict[int, bool] = {}
        #: Ids of the trades this batch created, and the unsettled cash its trades
        #: credited so far per (account, currency): for releases of holds drawn
        #: from unsettled cash (``_release``).
        self.trade_ids: set[int] = set()
        self.unsettled_credited: defaultdict[tuple[int, int], Decimal] = defaultdict(
            Decimal
        )

    def _load_orders(self, order_ids: set[int]) -> None:
        """Lock and load the orders not loaded yet (in pk order), and their OCO
        partners, each with the number of its amend requests still waiting.

        Lock order (docs/architecture.md): the batch is the one path that locks
        several orders (``FOR NO KEY UPDATE``: queueing a cancel does not wait for
        it); it takes them before any balance.

        The waiting amends are counted after the row lock: ``order_amend`` raises
        an order's hold and inserts its request under the same lock, so an amend
        either committed before the lock (counted here, with its raised
        ``held_amount`` read) or waits for this batch to commit.
        """
        missing = order_ids - self.states.keys()
        if not missing:
            return
        orders = (
            Order.objects.select_for_update(of=("self",), no_key=True)
            .select_related(
                "symbol__market", "symbol__asset", "symbol__currency", "held_asset"
            )
            .filter(pk__in=missing)
            .order_by("pk")
        )
        loaded = list(orders)
        waiting = Counter(
            OrderRequest.objects.filter(
                order_id__in=[order.pk for order in loaded],
                kind=OrderRequest.Kind.AMEND,
                processed_at__isnull=True,
            ).values_list("order_id", flat=True)
        )
        for order in loaded:
            resting = order.status in RESTING_STATUSES
            self.states[order.pk] = _OrderState(
                order,
                on_book=resting,
                was_on_book=resting,
                amends_waiting=waiting[order.pk],
            )
        # An OCO pair's hold is shared (``BatchBooking._settle_pair``): a leg is
        # never booked without its partner.
        partners = {order.oco_with_id for order in loaded if order.oco_with_id}
        self._load_orders(partners)

    def persist(self, transitions: dict[int, bool]) -> None:
        self._load_orders({request.order_id for request in self.requests})
        if self.worker.oco_orphans:
            self.end_oco_orphans(self.worker.oco_orphans)
            self.worker.oco_orphans = set()
        for symbol_id, auction in sorted(transitions.items()):
            self._auction_transition(symbol_id, auction)
        for request in self.requests:
            state = self.states[request.order_id]
            if request.kind == OrderRequest.Kind.PLACE:
                self._place(request, state)
            elif request.kind == OrderRequest.Kind.AMEND:
                self._amend(request, state)
            else:
                self._cancel(request, state)
        self._write()

    def _auction_transition(self, symbol_id: int, auction: bool) -> None:
        """Put a book into auction mode, or uncross it and leave auction mode."""
        symbol = self.worker.symbols[symbol_id]
        book = self.worker.books[symbol_id]
        if auction:
            book.apply(engine.SetAuction(True))
        else:
            self._apply_events(symbol, book.apply(engine.Uncross(book.last_price)))
            book.apply(engine.SetAuction(False))
        self.auction_changes[symbol_id] = auction
        # The symbol's summary shows the change even if no level moved.
        self.touched_levels.setdefault(symbol_id, set())

    # -- applying requests to the books -------------------------------------------

    def _place(self, request: OrderRequest, state: _OrderState) -> None:
        order = state.order
        if order.status != OrderStatus.PENDING:
            return  # cancelled before it reached the book
        symbol = self.worker.symbols.get(order.symbol_id) or order.symbol
        if symbol.status != Symbol.Status.ACTIVE:
            state.move(OrderStatus.REJECTED, reason="symbol_not_active")
            return
        trading = self.trading.of(order.symbol_id)
        if not (trading.allows_place and (trading.allows_match or trading.is_auction)):
            # The symbol's own state (a suspension, a circuit-breaker halt).
            state.move(OrderStatus.REJECTED, reason=f"symbol_{trading.code}")
            return
        book = self.worker.book_for(order.symbol_id)
        if self._partner_ended(order, book):
            # One of the pair ended before the other reached the book (filled,
            # cancelled, expired or rejected): this one must not execute too.
            state.move(OrderStatus.CANCELLED, reason=engine.CancelReason.OCO.value)
            return
        events = book.apply(new_order_command(order, symbol, book))
        self._apply_events(symbol, events)

    def _partner_ended(self, order: Order, book: engine.OrderBook) -> bool:
        """Whether ``order`` has an OCO partner that is not in the book because it
        ended (locks the partner: its state this batch, or the stored one)."""
        partner_id = order.oco_with_id
        if partner_id is None or partner_id in book:
            return False
        self._load_orders({partner_id})
        return self.states[partner_id].order.is_terminal

    def _oco_cancel_partner(self, order: Order, acting_user_id: int | None) -> None:
        """``order`` ended before it reached the book: cancel its OCO partner if
        the engine holds it (the engine links a pair only once both are in)."""
        partner_id = order.oco_with_id
        book = self.worker.book_for(order.symbol_id)
        if partner_id is None or partner_id not in book:
            return  # none, ended, or pending: its own entry sees this one ended
        events = [
            replace(event, reason=engine.CancelReason.OCO)
            if isinstance(event, engine.Cancelled) and event.order_id == partner_id
            else event
            for event in book.apply(engine.CancelOrder(partner_id))
        ]
        symbol = self.worker.symbols[order.symbol_id]
        self._apply_events(symbol, events, acting_user_id=acting_user_id)

    def end_oco_orphans(self, order_ids: set[int]) -> None:
        """Cancel (reason ``oco``) the live orders the worker left out of its
        rebuilt book because their OCO partner had ended (``oco_orphans``)."""
        self._load_orders(order_ids)
        for order_id in sorted(order_ids):
            state = self.states[order_id]
            if state.order.status in LIVE_STATUSES:
                state.on_book = False
                state.move(OrderStatus.CANCELLED, reason=engine.CancelReason.OCO.value)

    def _cancel(self, request: OrderRequest, state: _OrderState) -> None:
        """Carry out a cancel or expiry; every outcome is an order event.

        A pending order ends here; a live one through the engine. One the engine
        does not hold although the database says it is open is an inconsistency:
        logged as an error and ended with reason ``not_in_book`` (its reservation
        is released with the batch). An order that already ended records the
        refusal ``cancel_rejected:order_not_live`` (``expire_rejected:...``)."""
        order = state.order
        expire = request.kind == OrderRequest.Kind.EXPIRE
        user_id = request.requested_by_id
        if order.status == OrderStatus.PENDING:
            # Its place request has not been matched (the market is not open).
            state.move(
                OrderStatus.EXPIRED if expire else OrderStatus.CANCELLED,
                reason="expired" if expire else "requested",
                acting_user_id=user_id,
            )
            self._oco_cancel_partner(order, user_id)
        elif order.status not in OPEN_STATUSES:
            verb = "expire" if expire else "cancel"
            state.note(f"{verb}_rejected:order_not_live", acting_user_id=user_id)
        elif order.pk not in self.worker.book_for(order.symbol_id):
            logger.error(
                "order %s is %s in the database but not in the book: cancelling it",
                order.pk,
                order.status,
            )
            state.on_book = False
            state.move(
                OrderStatus.CANCELLED, reason="not_in_book", acting_user_id=user_id
            )
        else:
            symbol = self.worker.symbols[order.symbol_id]
            command = (
                engine.ExpireOrder(order.pk) if expire else engine.CancelOrder(order.pk)
            )
            events = self.worker.book_for(order.symbol_id).apply(command)
            self._apply_events(symbol, events, acting_user_id=user_id)

    def _amend(self, request: OrderRequest, state: _OrderState) -> None:
        order = state.order
        state.amends_waiting -= 1
        if order.status not in LIVE_STATUSES:
            # Filled, cancelled or not yet on the book when the market was closed
            # (a pending order's amend waits in the inbox only while it does).
            state.move(
                order.status, reason="amend_rejected:order_not_live", record=True
            )
            state.recheck_hold = True
            return
        symbol = self.worker.symbols[order.symbol_id]
        remaining = (
            None
            if request.quantity is None
            else symbol.to_lots(request.quantity - order.filled_quantity)
        )
        events = self.worker.book_for(order.symbol_id).apply(
            engine.AmendOrder(
                order.pk,
                quantity=remaining,
                price=_ticks(symbol, request.price),
                stop_price=_ticks(symbol, request.stop_price),
            )
        )
        if isinstance(events[0], engine.Rejected):
            state.move(
                order.status,
                reason=f"amend_rejected:{events[0].reason.value}",
                acting_user_id=request.requested_by_id,
                record=True,
            )
            state.recheck_hold = True
            return
        self._apply_events(symbol, events, acting_user_id=request.requested_by_id)

    def _apply_events(
        self,
        symbol: Symbol,
        events: list[engine.Event],
        acting_user_id: int | None = None,
    ) -> None:
        """Turn one command's engine events into order state changes and fills.

        ``acting_user_id`` (who asked for a cancel or amend) is recorded on the
        event. Every order that goes on the book (rests, refreshes an iceberg,
        parks as a stop) takes the next time priority."""
        ids: set[int] = set()
        for event in events:
            if isinstance(event, engine.Fill):
                ids.update((event.maker_order_id, event.taker_order_id))
            else:
                ids.add(event.order_id)
        self._load_orders(ids)
        touched = self.touched_levels[symbol.pk]
        for event in events:
            handler = self._handlers.get(type(event))
            if handler is not None:
                handler(self, symbol, event, touched, acting_user_id)

    def _on_accepted(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        self.states[event.order_id].move(OrderStatus.ACCEPTED)

    def _on_waiting(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        state.order.stop_price = symbol.from_ticks(event.stop_price)
        state.order.priority = self.worker.next_priority()
        state.move(OrderStatus.WAITING)

    def _on_stop_moved(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        state.order.stop_price = symbol.from_ticks(event.stop_price)
        state.changed = True

    def _on_triggered(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        state.move(
            OrderStatus.ACCEPTED,
            reason=f"triggered at {symbol.from_ticks(event.reference_price)}",
        )

    def _on_fill(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        self._fill(symbol, event)
        maker = self.states[event.maker_order_id]
        touched.add((_SIDE[maker.order.side], event.price))
        if maker.order.display_quantity is not None and maker.order.visible_quantity:
            maker.order.visible_quantity -= symbol.from_lots(event.quantity)
        if not event.maker_remaining:
            maker.on_book = False

    def _on_rested(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        order = state.order
        order.priority = self.worker.next_priority()
        price = symbol.from_ticks(event.price)
        if order.price != price:
            # A market-to-limit rest, a repriced post-only order.
            order.price = price
            state.recheck_hold = True
        if order.display_quantity is not None:
            order.visible_quantity = symbol.from_lots(event.visible)
        state.entered_book = True
        state.on_book = True
        if order.status == OrderStatus.ACCEPTED:
            state.move(OrderStatus.WORKING)
        state.changed = True
        touched.add((event.side, event.price))

    def _on_replenished(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        state.order.priority = self.worker.next_priority()
        state.order.visible_quantity = symbol.from_lots(event.visible)
        state.changed = True
        touched.add((event.side, event.price))

    def _on_amended(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        order = state.order
        if state.on_book and order.price is not None:
            touched.add((_SIDE[order.side], symbol.to_ticks(order.price)))
        order.quantity = order.filled_quantity + symbol.from_lots(event.remaining)
        if event.price is not None:
            order.price = symbol.from_ticks(event.price)
        if event.stop_price is not None:
            order.stop_price = symbol.from_ticks(event.stop_price)
        if order.display_quantity is not None:
            order.visible_quantity = symbol.from_lots(event.visible)
        if state.on_book and order.price is not None:
            touched.add((_SIDE[order.side], symbol.to_ticks(order.price)))
        if not event.priority_kept:
            # Re-entered: it is off the book until it rests again.
            state.on_book = False
        state.recheck_hold = True
        state.move(
            order.status,
            reason="amended" if event.priority_kept else "amended:priority_lost",
            acting_user_id=acting_user_id,
            record=True,
        )

    def _on_cancelled(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        order = state.order
        if state.on_book and order.price is not None:
            touched.add((_SIDE[order.side], symbol.to_ticks(order.price)))
        state.on_book = False
        expired = event.reason in _EXPIRED_REASONS
        state.move(
            OrderStatus.EXPIRED if expired else OrderStatus.CANCELLED,
            reason=event.reason.value,
            acting_user_id=acting_user_id,
        )

    def _on_rejected(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        state = self.states[event.order_id]
        if state.order.status == OrderStatus.PENDING:
            state.move(OrderStatus.REJECTED, reason=event.reason.value)
        else:
            logger.warning("engine rejected %s: %s", event.order_id, event.reason)

    def _on_band_breached(
        self, symbol: Symbol, event: Any, touched: _Levels, acting_user_id: int | None
    ) -> None:
        self.band_breaches[symbol.pk] = event.price

    _handlers = {
        engine.Accepted: _on_accepted,
        engine.Waiting: _on_waiting,
        engine.StopMoved: _on_stop_moved,
        engine.Triggered: _on_triggered,
        engine.Fill: _on_fill,
        engine.Rested: _on_rested,
        engine.Replenished: _on_replenished,
        engine.Amended: _on_amended,
        engine.Cancelled: _on_cancelled,
        engine.Rejected: _on_rejected,
        engine.BandBreached: _on_band_breached,
    }

    def _fill(self, symbol: Symbol, event: engine.Fill) -> None:
        taker = self.states[event.taker_order_id]
        maker = self.states[event.maker_order_id]
        buy, sell = (
            (taker, maker) if taker.order.side == Order.Side.BUY else (maker, taker)
        )
        quantity = symbol.from_lots(event.quantity)
        price = symbol.from_ticks(event.price)
        for state in (taker, maker):
            order = state.order
            order.filled_quantity += quantity
            order.filled_value += price * quantity
            filled = order.filled_quantity == order.quantity
            state.move(
                OrderStatus.FILLED if filled else OrderStatus.PARTIALLY_FILLED,
                fill_quantity=quantity,
                fill_price=price,
            )
        aggressor = "" if event.aggressor is None else taker.order.side
        self.fills.append(
            _Fill(symbol, event, buy, sell, aggressor, buy.order.remaining_quantity)
        )
