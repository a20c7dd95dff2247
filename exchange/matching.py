"""The matching worker: the one bridge between the pure engine and the database.

One worker owns a market at a time (a PostgreSQL advisory lock; a process-local lock
in the embedded profile). It rebuilds its books from the stored open orders, then
repeatedly takes a batch of requests from the market's inbox in arrival order,
applies them to the in-memory books and persists the whole outcome (order states,
trades, ledger postings, events, stream sequences) in one transaction. Messages are
published after commit. If anything fails the transaction rolls back, the in-memory
books are discarded and rebuilt from the database, so a crash at any instant loses
no acknowledged order and duplicates no fill.

This module imports ``oms``: it is the one place that orchestrates engine results
into orders, trades and ledger postings.
"""

import hashlib
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Max
from django.utils import timezone

from config.db import bulk_update_rows
from exchange import engine
from exchange.calendar import business_days_add, local_date
from exchange.fees import fill_fee, order_fee_rates
from exchange.models import Market, Symbol, Trade, TradingState
from exchange.services import symbols_circuit_break
from exchange.settlement import unsettled_proceeds_pending
from exchange.streams import Message, publish_on_commit, stream_advance, stream_message
from exchange.trading import MarketTradingStates, dynamic_band, market_trading_states
from exchange.wakeup import MarketWaiter
from exchange.wire import trade_to_wire
from oms.models import (
    LIVE_STATUSES,
    RESTING_STATUSES,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from oms.publish import private_messages
from oms.services import order_buy_reservation, orders_expire_due
from registry.ledger import LedgerBatch, Line
from registry.models import Account, Bucket, JournalEntry
from registry.services import system_account

logger = logging.getLogger(__name__)

_SIDE = {Order.Side.BUY: engine.Side.BUY, Order.Side.SELL: engine.Side.SELL}
_TYPE = {value: engine.OrderType(value) for value in Order.Type.values}
_TIF = {value: engine.TimeInForce(value) for value in Order.TimeInForce.values}
_TRIGGER = {value: engine.TriggerRef(value) for value in Order.Trigger.values}
_POST_ONLY = {value: engine.PostOnly(value) for value in Order.PostOnly.values}
_STP = {value: engine.SelfTrade(value) for value in Order.SelfTrade.values}
#: Engine cancel reasons that end an order as expired rather than cancelled.
_EXPIRED_REASONS = frozenset({engine.CancelReason.EXPIRED})
_local_owners: dict[str, threading.Lock] = defaultdict(threading.Lock)


def book_topic(symbol: Symbol) -> str:
    return f"book.{symbol.identifier}"


def trades_topic(symbol: Symbol) -> str:
    return f"trades.{symbol.identifier}"


def advisory_key(market_code: str) -> int:
    digest = hashlib.sha256(f"xchange-matcher:{market_code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def market_owned(market_code: str) -> bool:
    """Does some matching worker own the market right now?"""
    if connection.vendor == "postgresql":
        unsigned = advisory_key(market_code) & 0xFFFFFFFFFFFFFFFF
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND classid = %s AND objid = %s AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database()))",
                [unsigned >> 32, unsigned & 0xFFFFFFFF],
            )
            return bool(cursor.fetchone()[0])
    return _local_owners[market_code].locked()


class MarketOwnership:
    """Exactly one owner per market: a session-level advisory lock held on the
    worker's own database connection (released by PostgreSQL if the process or
    the connection dies), or a process-local lock for SQLite."""

    def __init__(self, market_code: str) -> None:
        self.market_code = market_code
        self._local: threading.Lock | None = None

    def try_acquire(self) -> bool:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_try_advisory_lock(%s)", [advisory_key(self.market_code)]
                )
                return bool(cursor.fetchone()[0])
        lock = _local_owners[self.market_code]
        if lock.acquire(blocking=False):
            self._local = lock
            return True
        return False

    def release(self) -> None:
        if self._local is not None:
            self._local.release()
            self._local = None
        elif connection.vendor == "postgresql" and connection.connection is not None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s)",
                        [advisory_key(self.market_code)],
                    )
            except DatabaseError:
                pass


@dataclass
class _OrderState:
    order: Order
    events: list[OrderEvent] = field(default_factory=list)
    changed: bool = False
    entered_book: bool = False
    #: The order rests on the book (set from the stored status when loaded).
    on_book: bool = False
    #: It rested on the book before this batch.
    was_on_book: bool = False
    #: Amends of this order not yet applied (this batch's and later ones): while
    #: any is waiting, fills free no cash (the amend may need it).
    amends_waiting: int = 0
    #: Re-check the reservation against the order's needs at the end of the batch
    #: (its price or quantity changed).
    recheck_hold: bool = False

    def move(
        self,
        to_status: str,
        *,
        reason: str = "",
        acting_user_id: int | None = None,
        record: bool = False,
        **fill: object,
    ) -> None:
        if self.order.status != to_status or fill or record:
            self.events.append(
                OrderEvent(
                    order=self.order,
                    from_status=self.order.status,
                    to_status=to_status,
                    reason=reason,
                    acting_user_id=acting_user_id,
                    **fill,
                )
            )
        self.order.status = to_status
        if reason:
            self.order.status_reason = reason
        self.changed = True


@dataclass
class _Fill:
    symbol: Symbol
    event: engine.Fill
    buy: _OrderState
    sell: _OrderState
    aggressor: str
    #: What the buy order still had to fill right after this fill (ledger postings
    #: are made after the whole batch has run, when the order may have moved on).
    buy_remaining: Decimal


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch changed, for hooks that keep derived data in the same transaction.

    ``symbols`` are those whose book or trades changed; ``books`` the worker's
    in-memory books (already reflecting the batch), keyed by symbol id.
    """

    market: Market
    now: datetime
    trades: list[Trade]
    symbols: dict[int, Symbol]
    books: dict[int, engine.OrderBook]
    #: Orders whose state changed in the batch (their symbol is loaded).
    orders: list[Order]
    #: Ids of the orders that entered the book in this batch (some may have left it
    #: again within the batch).
    entered_book: frozenset[int]
    #: Ids of the orders that were on the book before this batch and are not now.
    left_book: frozenset[int] = frozenset()
    #: Work for after the commit, run once the batch's messages are handed over
    #: (e.g. scheduling Celery tasks); a failure there is logged, not raised.
    after_commit: list[Callable[[], object]] = field(default_factory=list)


BatchHook = Callable[[BatchOutcome], list[Message]]
_batch_hooks: list[BatchHook] = []


def batch_hook_register(hook: BatchHook) -> None:
    """Run ``hook`` inside every batch transaction, after trades are written and
    before commit; it returns messages to publish after commit. Hooks lock only rows
    no other writer holds across the batch (e.g. market-data rows owned by the
    worker), after the balance and stream-sequence locks. Registered at start-up
    (``AppConfig.ready``)."""
    if hook not in _batch_hooks:
        _batch_hooks.append(hook)


def _last_prices(symbols: object) -> dict[int, Decimal]:
    """The last trade price of each symbol (by id)."""
    ids = [symbol.pk for symbol in symbols]  # type: ignore[attr-defined]
    last = (
        Trade.objects.filter(symbol_id__in=ids)
        .order_by("symbol_id", "-seq")
        .distinct("symbol_id")
        .values_list("symbol_id", "price")
        if connection.vendor == "postgresql"
        else [
            (
                symbol_id,
                Trade.objects.filter(symbol_id=symbol_id)
                .order_by("-seq")
                .values_list("price", flat=True)
                .first(),
            )
            for symbol_id in ids
        ]
    )
    return {symbol_id: price for symbol_id, price in last if price is not None}


def _ticks(symbol: Symbol, price: Decimal | None) -> int | None:
    return None if price is None else symbol.to_ticks(price)


def _lots(symbol: Symbol, quantity: Decimal | None) -> int | None:
    return None if quantity is None else symbol.to_lots(quantity)


def new_order_command(
    order: Order, symbol: Symbol, book: engine.OrderBook
) -> engine.NewOrder:
    """The engine command that enters a stored order. The OMS links both orders of
    an OCO pair; the link is made in the engine by the second to arrive."""
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


class MatchingWorker:
    """Matches one market. ``run()`` blocks until ``stop_event`` is set."""

    def __init__(
        self,
        market_code: str,
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.market_code = market_code
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.stop_event = stop_event or threading.Event()
        self.market: Market | None = None
        self.books: dict[int, engine.OrderBook] = {}
        self.symbols: dict[int, Symbol] = {}
        self.is_owner = False
        #: The books reflect the database (False until rebuilt, and after a failure).
        self.is_ready = False
        self._last_priority = 0
        self._last_expiry_scan = 0.0

    # -- life cycle ---------------------------------------------------------------

    def run(self) -> None:
        """Own the market, then match until stopped.

        A lost database connection gives up ownership and starts again; any other
        failure discards the in-memory books, which are rebuilt from the database
        before the next batch.
        """
        ownership = MarketOwnership(self.market_code)
        waiter: MarketWaiter | None = None
        try:
            while not self.stop_event.is_set():
                try:
                    if not self.is_owner:
                        self.is_owner = ownership.try_acquire()
                        if not self.is_owner:
                            self.stop_event.wait(self.poll_seconds)
                            continue
                        logger.info("matcher owns market %s", self.market_code)
                    if not self.is_ready:
                        self.rebuild()
                    if waiter is None:
                        waiter = MarketWaiter(self.market_code)
                    if self.process_batch() == 0:
                        if self.expire_due() == 0:
                            waiter.wait(self.poll_seconds)
                except (OperationalError, InterfaceError):
                    logger.exception("database connection lost; re-acquiring market")
                    self.is_ready = False
                    self.is_owner = False
                    ownership.release()
                    connection.close()
                    if waiter is not None:
                        waiter.close()
                        waiter = None
                    self.stop_event.wait(self.poll_seconds)
                except Exception:
                    logger.exception("matching batch failed; rebuilding the book")
                    self.is_ready = False
                    self.stop_event.wait(self.poll_seconds)
        finally:
            if waiter is not None:
                waiter.close()
            if self.is_owner:
                ownership.release()
            connection.close()

    def rebuild(self) -> None:
        """Load the market and rebuild every book from the stored resting orders."""
        self.market = Market.objects.get(code=self.market_code)
        self.symbols = {
            s.pk: s
            for s in Symbol.objects.filter(market=self.market).select_related(
                "market", "asset", "currency"
            )
        }
        self.books = {symbol_id: engine.OrderBook() for symbol_id in self.symbols}
        last_prices = _last_prices(self.symbols.values())
        for symbol_id, book in self.books.items():
            symbol = self.symbols[symbol_id]
            last = last_prices.get(symbol_id)
            if last is not None:
                book.apply(engine.SetLastPrice(symbol.to_ticks(last)))
            if symbol.book_in_auction:
                # Restored orders may cross: they wait for the uncross.
                book.apply(engine.SetAuction(True))
            self.band_set(symbol_id)
        live = Order.objects.filter(market=self.market, status__in=LIVE_STATUSES)
        # Resting orders in priority order, then parked stops in acceptance order:
        # the order the engine lists them in its snapshot.
        restored: set[int] = set()
        for waiting in (False, True):
            orders = (
                live.filter(status=OrderStatus.WAITING)
                if waiting
                else live.exclude(status=OrderStatus.WAITING)
            )
            for order in orders.order_by("priority", "id").iterator(chunk_size=2000):
                symbol = self.symbols[order.symbol_id]
                events = self.books[order.symbol_id].apply(
                    restore_command(order, symbol, restored)
                )
                if isinstance(events[0], engine.Rejected):
                    logger.error("cannot restore order %s: %s", order.pk, events[0])
                restored.add(order.pk)
        self._last_priority = (
            Order.objects.filter(market=self.market).aggregate(p=Max("priority"))["p"]
            or 0
        )
        self.is_ready = True

    def expire_due(self) -> int:
        """Queue the expiry of this market's due DAY/GTD orders (at most once a
        poll interval); returns how many were queued."""
        now = time.monotonic()
        if now - self._last_expiry_scan < self.poll_seconds:
            return 0
        self._last_expiry_scan = now
        assert self.market is not None
        return orders_expire_due(market=self.market)

    def next_priority(self) -> int:
        """Time priority for an order entering the book now: the order in which this
        worker (and its successors, which continue from the stored maximum) put
        orders on the book, so a rebuilt book ranks them exactly as the live one."""
        self._last_priority += 1
        return self._last_priority

    # -- one batch ------------------------------------------------------------------

    def process_batch(self) -> int:
        """Take up to ``batch_size`` requests the market's trading state lets through
        and persist their outcome, together with any auction transition of a book
        (entering an auction, or the uncross when leaving one); returns how many
        requests and transitions were processed."""
        assert self.market is not None and self.is_ready
        with transaction.atomic(durable=True):
            market = Market.objects.select_related("currency").get(pk=self.market.pk)
            self.market = market
            for symbol in self.symbols.values():
                symbol.market = market  # fresh settings (bands, fees, states)
            now = timezone.now()
            states = market_trading_states(market, now)
            inbox = OrderRequest.objects.filter(
                market=market,
                processed_at__isnull=True,
                kind__in=_request_kinds(states.market_state),
            )
            requests = list(inbox.order_by("id")[: self.batch_size])
            transitions = self._auction_transitions(states)
            if not requests and not transitions:
                return 0
            try:
                _Batch(self, market, requests, states, now).persist(transitions)
            except BaseException:
                # The books already hold this batch's effects: start again from
                # what the database says.
                self.is_ready = False
                raise
        return len(requests) + len(transitions)

    def _auction_transitions(self, states: MarketTradingStates) -> dict[int, bool]:
        """Symbol id -> whether its book must now be in auction mode, for the books
        whose mode must change. A book stays in auction until a state that uncrosses
        on entry (a halt from an auction keeps the orders waiting)."""
        changes = {}
        for symbol_id, book in self.books.items():
            state = states.of(symbol_id)
            wanted = state.is_auction or (
                book.in_auction and not state.uncross_on_entry
            )
            if wanted != book.in_auction:
                changes[symbol_id] = wanted
        return changes

    def band_set(self, symbol_id: int) -> None:
        """Centre the symbol's circuit-breaker band on its last trade price."""
        symbol = self.symbols[symbol_id]
        book = self.books[symbol_id]
        last = book.last_price
        band = dynamic_band(symbol, None if last is None else symbol.from_ticks(last))
        low, high = (None, None) if band is None else map(symbol.to_ticks, band)
        if book.band != (low, high):
            book.apply(engine.SetBand(low, high))

    def book_for(self, symbol_id: int) -> engine.OrderBook:
        if symbol_id not in self.books:
            # A symbol issued after the worker started: it has no orders yet.
            self.symbols[symbol_id] = Symbol.objects.select_related(
                "market", "asset", "currency"
            ).get(pk=symbol_id)
            self.books[symbol_id] = engine.OrderBook()
            self.band_set(symbol_id)
        return self.books[symbol_id]


def _request_kinds(state: TradingState) -> list[str]:
    """The requests a market state lets the worker take: expiries always; places
    while it matches or collects an auction; amends and cancels as it allows."""
    kinds = [OrderRequest.Kind.EXPIRE]
    if state.allows_cancel:
        kinds.append(OrderRequest.Kind.CANCEL)
    if state.allows_amend:
        kinds.append(OrderRequest.Kind.AMEND)
    if state.allows_place and (state.allows_match or state.is_auction):
        kinds.append(OrderRequest.Kind.PLACE)
    return kinds


#: The price levels a batch touched on one book: (side, price in ticks).
_Levels = set[tuple[engine.Side, int]]


class _Batch:
    """The outcome of one batch of requests, persisted in the caller's transaction."""

    def __init__(
        self,
        worker: MatchingWorker,
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
        self.orders_with_later_amends: set[int] = set()
        #: Ids of the trades this batch created, and the unsettled cash its trades
        #: credited so far per (account, currency): for releases of holds drawn
        #: from unsettled cash (``_release``).
        self.trade_ids: set[int] = set()
        self.unsettled_credited: defaultdict[tuple[int, int], Decimal] = defaultdict(
            Decimal
        )

    def _load_orders(self, order_ids: set[int]) -> None:
        missing = order_ids - self.states.keys()
        if not missing:
            return
        orders = (
            Order.objects.select_for_update(of=("self",))
            .select_related(
                "symbol__market", "symbol__asset", "symbol__currency", "held_asset"
            )
            .filter(pk__in=missing)
            .order_by("pk")
        )
        for order in orders:
            resting = order.status in RESTING_STATUSES
            self.states[order.pk] = _OrderState(
                order, on_book=resting, was_on_book=resting
            )

    def persist(self, transitions: dict[int, bool]) -> None:
        self._load_orders({request.order_id for request in self.requests})
        self._count_waiting_amends()
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

    def _count_waiting_amends(self) -> None:
        if not self.requests:
            return
        for request in self.requests:
            if request.kind == OrderRequest.Kind.AMEND:
                self.states[request.order_id].amends_waiting += 1
        later = (
            OrderRequest.objects.filter(
                market=self.market,
                kind=OrderRequest.Kind.AMEND,
                processed_at__isnull=True,
                pk__gt=self.requests[-1].pk,
            )
            .values_list("order_id", flat=True)
            .distinct()
        )
        self.orders_with_later_amends = set(later)

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
        events = book.apply(new_order_command(order, symbol, book))
        self._apply_events(symbol, events)

    def _cancel(self, request: OrderRequest, state: _OrderState) -> None:
        order = state.order
        expire = request.kind == OrderRequest.Kind.EXPIRE
        if order.status == OrderStatus.PENDING:
            # Its place request has not been matched (the market is not open).
            state.move(
                OrderStatus.EXPIRED if expire else OrderStatus.CANCELLED,
                reason="expired" if expire else "requested",
                acting_user_id=request.requested_by_id,
            )
        elif order.status in LIVE_STATUSES:
            symbol = self.worker.symbols[order.symbol_id]
            command = (
                engine.ExpireOrder(order.pk) if expire else engine.CancelOrder(order.pk)
            )
            events = self.worker.book_for(order.symbol_id).apply(command)
            self._apply_events(symbol, events, acting_user_id=request.requested_by_id)

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
                ids.add(event.order_id)  # type: ignore[union-attr]
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

    # -- persistence -----------------------------------------------------------------

    def _write(self) -> None:
        fee_account = self.market.fee_account or system_account(Account.Kind.FEES)
        keys: set[tuple[int, int]] = set()
        for fill in self.fills:
            for state in (fill.buy, fill.sell):
                keys.add((state.order.account_id, fill.symbol.currency_id))
                keys.add((state.order.account_id, fill.symbol.asset_id))
            keys.add((fee_account.pk, fill.symbol.currency_id))
        for state in self.states.values():
            if state.order.is_terminal or state.recheck_hold:
                keys.add((state.order.account_id, state.order.held_asset_id))
        ledger = LedgerBatch(keys)
        trades = self._create_trades()
        for fill, trade in zip(self.fills, trades, strict=True):
            self._post_trade(ledger, fee_account, fill, trade)
        for state in self.states.values():
            if state.order.is_terminal and state.order.held_amount:
                self._release(ledger, state, state.order.held_amount)
            elif state.recheck_hold:
                self._recheck_hold(ledger, state)
        ledger.flush()
        self._symbols_update(trades)
        changed = [s for s in self.states.values() if s.changed]
        for state in changed:
            state.order.updated_at = self.now
        bulk_update_rows(
            Order,
            [s.order for s in changed],
            [
                "status",
                "status_reason",
                "quantity",
                "price",
                "stop_price",
                "visible_quantity",
                "filled_quantity",
                "filled_value",
                "fees",
                "fee_accrued",
                "held_amount",
                "held_unsettled",
                "priority",
                "updated_at",
            ],
        )
        events = [event for state in changed for event in state.events]
        for event in events:
            event.created_at = self.now
        OrderEvent.objects.bulk_create(events)
        OrderRequest.objects.filter(pk__in=[r.pk for r in self.requests]).update(
            processed_at=self.now
        )
        messages = self._market_messages(trades)
        outcome = BatchOutcome(
            market=self.market,
            now=self.now,
            trades=trades,
            symbols={
                symbol_id: self.worker.symbols[symbol_id]
                for symbol_id in {t.symbol_id for t in trades}
                | set(self.touched_levels)
            },
            books=self.worker.books,
            orders=[state.order for state in changed],
            entered_book=frozenset(
                state.order.pk for state in changed if state.entered_book
            ),
            left_book=frozenset(
                state.order.pk
                for state in changed
                if state.was_on_book and not state.on_book
            ),
        )
        for hook in _batch_hooks:
            messages += hook(outcome)
        messages += private_messages(
            orders=[s.order for s in changed],
            balances=[ledger.balances[key] for key in sorted(keys)],
        )
        publish_on_commit(messages)
        for callback in outcome.after_commit:
            transaction.on_commit(callback, robust=True)

    def _symbols_update(self, trades: list[Trade]) -> None:
        """After the balance locks: halt the symbols whose dynamic band stopped a
        trade (their books are in auction already), store each book's auction mode,
        and re-centre the bands of the symbols that traded."""
        worker = self.worker
        breaks = [
            (
                worker.symbols[symbol_id],
                self.now + timedelta(seconds=self.market.cooling_off_seconds),
                f"price {worker.symbols[symbol_id].from_ticks(price)} beyond the "
                "dynamic band",
            )
            for symbol_id, price in sorted(self.band_breaches.items())
        ]
        if breaks:
            for symbol in symbols_circuit_break(breaks=breaks):
                symbol.market = self.market
                worker.symbols[symbol.pk].trading_state = symbol.trading_state
                worker.symbols[symbol.pk].halted_until = symbol.halted_until
            self.touched_levels.update(
                {pk: self.touched_levels.get(pk, set()) for pk in self.band_breaches}
            )
        for symbol_id in set(self.auction_changes) | set(self.band_breaches):
            in_auction = worker.books[symbol_id].in_auction
            worker.symbols[symbol_id].book_in_auction = in_auction
            Symbol.objects.filter(pk=symbol_id).update(book_in_auction=in_auction)
        for symbol_id in {trade.symbol_id for trade in trades}:
            worker.band_set(symbol_id)

    def _create_trades(self) -> list[Trade]:
        if not self.fills:
            return []
        counts = Counter(trades_topic(fill.symbol) for fill in self.fills)
        next_seq = stream_advance(counts)
        trade_date = local_date(self.market, self.now)
        days = self.market.settlement_days
        # T+0 settles at the trade; T+n on the n-th business day after the trade's
        # date in the market's timezone.
        settlement_date = (
            business_days_add(self.market, trade_date, days) if days else trade_date
        )
        running: dict[int, tuple[Decimal, Decimal]] = {}
        trades = []
        for fill in self.fills:
            topic = trades_topic(fill.symbol)
            price = fill.symbol.from_ticks(fill.event.price)
            quantity = fill.symbol.from_lots(fill.event.quantity)
            value = fill.symbol.currency.quantize(price * quantity)
            buyer_fee, seller_fee = self._fees(fill, value, running)
            trades.append(
                Trade(
                    symbol=fill.symbol,
                    seq=next_seq[topic],
                    price=price,
                    quantity=quantity,
                    value=value,
                    buyer_fee=buyer_fee,
                    seller_fee=seller_fee,
                    aggressor_side=fill.aggressor,
                    buy_order_id=fill.buy.order.pk,
                    sell_order_id=fill.sell.order.pk,
                    buyer_id=fill.buy.order.account_id,
                    seller_id=fill.sell.order.account_id,
                    executed_at=self.now,
                    settlement_date=settlement_date,
                    settled_at=None if days else self.now,
                )
            )
            next_seq[topic] += 1
        created = Trade.objects.bulk_create(trades)
        self.trade_ids.update(trade.pk for trade in created)
        return created

    def _fees(
        self,
        fill: _Fill,
        value: Decimal,
        running: dict[int, tuple[Decimal, Decimal]],
    ) -> tuple[Decimal, Decimal]:
        """(buyer fee, seller fee) of a fill, by ``exchange.fees``: each order's
        cumulative fee after the fill (max of its minimum and its accrued rate x
        value, rounded down) minus what it was charged before, at the rates pinned
        on the order (taker for the aggressor); the seller's fee is capped at the
        fill's proceeds. ``running`` carries each order's (accrued, charged)
        through the batch's fills, in fill order."""
        fees = []
        for state, proceeds_cap in ((fill.buy, None), (fill.sell, value)):
            order = state.order
            accrued, charged = running.get(order.pk, (order.fee_accrued, order.fees))
            fee, accrued_after = fill_fee(
                rates=order_fee_rates(order),
                is_taker=fill.aggressor == order.side,
                value=value,
                accrued=accrued,
                charged=charged,
                currency=fill.symbol.currency,
                proceeds_cap=proceeds_cap,
            )
            running[order.pk] = (accrued_after, charged + fee)
            fees.append(fee)
        return fees[0], fees[1]

    def _post_trade(
        self, ledger: LedgerBatch, fee_account: Account, fill: _Fill, trade: Trade
    ) -> None:
        """Post one trade: the buyer's cash (value + fee) leaves ``held``, the
        seller's securities leave ``held``, fees go to the fee account. On a T+0
        market the seller's proceeds (value - fee) and the buyer's securities land
        in ``available``; otherwise in ``unsettled`` until ``settlement_run``."""
        symbol = fill.symbol
        currency = symbol.currency
        value = trade.value
        buy, sell = fill.buy.order, fill.sell.order
        buyer_fee, seller_fee = trade.buyer_fee, trade.seller_fee
        receive = Bucket.AVAILABLE if trade.settled_at else Bucket.UNSETTLED
        seller_position = ledger.balance(sell.account_id, symbol.asset_id)
        cost_out = Decimal(0)
        if seller_position.total:
            cost_out = currency.quantize(
                seller_position.cost * trade.quantity / seller_position.total
            )
        ledger.post(
            kind=JournalEntry.Kind.TRADE,
            lines=[
                Line(buy.account_id, currency.pk, Bucket.HELD, -(value + buyer_fee)),
                Line(sell.account_id, currency.pk, receive, value - seller_fee),
                Line(
                    fee_account.pk,
                    currency.pk,
                    Bucket.AVAILABLE,
                    buyer_fee + seller_fee,
                ),
                Line(sell.account_id, symbol.asset_id, Bucket.HELD, -trade.quantity),
                Line(buy.account_id, symbol.asset_id, receive, trade.quantity),
            ],
            reference=f"trade:{trade.pk}",
        )
        if receive == Bucket.UNSETTLED:
            self.unsettled_credited[(sell.account_id, currency.pk)] += (
                value - seller_fee
            )
        ledger.adjust_cost(buy.account_id, symbol.asset_id, value + buyer_fee)
        ledger.adjust_cost(sell.account_id, symbol.asset_id, -cost_out)
        self._charge_fee(fill, buy, value, buyer_fee)
        self._charge_fee(fill, sell, value, seller_fee)
        buy.held_amount -= value + buyer_fee
        # Fills spend the part of the hold drawn from unsettled cash first.
        buy.held_unsettled -= min(buy.held_unsettled, value + buyer_fee)
        sell.held_amount -= trade.quantity
        if fill.buy_remaining and self._frees_per_fill(fill.buy):
            # Keep exactly what the unfilled rest can still need (fees accrued and
            # charged so far included); free the rest, e.g. price improvement.
            # (Whatever a terminal order still holds is released after all fills.)
            needed = order_buy_reservation(buy, quantity=fill.buy_remaining)
            if buy.held_amount > needed:
                self._release(ledger, fill.buy, buy.held_amount - needed)

    def _frees_per_fill(self, state: _OrderState) -> bool:
        """Whether fills may free a buy's price improvement as they happen: not
        while an amend of the order waits (it may need the cash held for it), nor
        when its price or quantity changed in the batch (re-checked at the end)."""
        return not (
            state.recheck_hold or state.order.pk in self.orders_with_later_amends
        )

    def _recheck_hold(self, ledger: LedgerBatch, state: _OrderState) -> None:
        """Release what a live order holds beyond what its rest can still need."""
        order = state.order
        if order.is_terminal or order.pk in self.orders_with_later_amends:
            return
        if order.side == Order.Side.BUY:
            needed = order_buy_reservation(order)
        else:
            needed = order.remaining_quantity
        if order.held_amount > needed:
            self._release(ledger, state, order.held_amount - needed)
        elif order.held_amount < needed:
            logger.error(
                "order %s holds %s, needs %s", order.pk, order.held_amount, needed
            )

    def _charge_fee(
        self, fill: _Fill, order: Order, value: Decimal, fee: Decimal
    ) -> None:
        """Record a fill's fee on the order (its accrued fee as ``_fees`` computed
        it for the same fill, in the same order)."""
        _, accrued_after = fill_fee(
            rates=order_fee_rates(order),
            is_taker=fill.aggressor == order.side,
            value=value,
            accrued=order.fee_accrued,
            charged=order.fees,
            currency=fill.symbol.currency,
        )
        order.fee_accrued = accrued_after
        order.fees += fee

    def _release(
        self, ledger: LedgerBatch, state: _OrderState, amount: Decimal
    ) -> None:
        """Release ``amount`` of an order's hold.

        The part of the hold drawn from unsettled cash stays in the hold as long
        as it can; the part of it released goes back to ``unsettled`` as far as
        the account's unsettled sale proceeds still pending settlement have room
        for it (what they no longer cover has settled meanwhile, so it is
        available), the rest to ``available``.
        """
        order = state.order
        key = (order.account_id, order.held_asset_id)
        from_unsettled = max(
            Decimal(0), order.held_unsettled - (order.held_amount - amount)
        )
        to_unsettled = (
            min(from_unsettled, self._unsettled_room(ledger, key))
            if from_unsettled
            else Decimal(0)
        )
        ledger.post(
            kind=JournalEntry.Kind.RELEASE,
            lines=[
                Line(*key, Bucket.HELD, -amount),
                Line(*key, Bucket.AVAILABLE, amount - to_unsettled),
                Line(*key, Bucket.UNSETTLED, to_unsettled),
            ],
            reference=f"order:{order.pk}",
        )
        order.held_amount -= amount
        order.held_unsettled -= from_unsettled
        state.changed = True

    def _unsettled_room(self, ledger: LedgerBatch, key: tuple[int, int]) -> Decimal:
        """How much more unsettled cash the account may hold: its sale proceeds
        still pending settlement (earlier batches' trades, plus what this batch
        credited so far) minus its unsettled bucket now."""
        account_id, asset_id = key
        pending = unsettled_proceeds_pending(
            account_id=account_id, asset_id=asset_id, exclude_ids=self.trade_ids
        )
        pending += self.unsettled_credited[key]
        return max(Decimal(0), pending - ledger.balance(*key).unsettled)

    def _market_messages(self, trades: list[Trade]) -> list[Message]:
        messages: list[Message] = []
        book_counts = Counter(
            book_topic(self.worker.symbols[symbol_id])
            for symbol_id, levels in self.touched_levels.items()
            if levels
        )
        next_seq = stream_advance(book_counts)
        for symbol_id, levels in sorted(self.touched_levels.items()):
            if not levels:
                continue
            symbol = self.worker.symbols[symbol_id]
            book = self.worker.books[symbol_id]
            bids, asks = [], []
            for side, price in sorted(
                levels, key=lambda level: (level[0].value, level[1])
            ):
                quantity, count = book.level(side, price)
                row = [
                    str(symbol.from_ticks(price)),
                    str(symbol.from_lots(quantity)),
                    count,
                ]
                (bids if side == engine.Side.BUY else asks).append(row)
            topic = book_topic(symbol)
            messages.append(
                stream_message(topic, next_seq[topic], {"bids": bids, "asks": asks})
            )
        for trade in trades:
            messages.append(
                stream_message(
                    trades_topic(trade.symbol), trade.seq, trade_to_wire(trade)
                )
            )
        return messages


def matcher_threads_start(stop_event: threading.Event) -> list[threading.Thread]:
    """Start a matching thread per market (embedded profile)."""
    from django.conf import settings

    threads = []
    for code in Market.objects.values_list("code", flat=True):
        worker = MatchingWorker(
            code,
            batch_size=settings.MATCHER_BATCH_SIZE,
            poll_seconds=settings.MATCHER_POLL_SECONDS,
            stop_event=stop_event,
        )
        thread = threading.Thread(
            target=worker.run, name=f"matcher-{code}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads
