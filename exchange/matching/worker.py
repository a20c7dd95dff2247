"""The matching worker's life cycle: ownership, rebuild, batches."""

import logging
import threading
import time
from decimal import Decimal

from django.db import (
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Max
from django.utils import timezone

from exchange import engine
from exchange.matching.batch import _Batch
from exchange.matching.commands import oco_orphans, restore_command
from exchange.matching.ownership import MarketOwnership
from exchange.models import Market, Symbol, Trade, TradingState
from exchange.trading import MarketTradingStates, dynamic_band, market_trading_states
from exchange.wakeup import MarketWaiter
from oms.models import (
    LIVE_STATUSES,
    Order,
    OrderRequest,
    OrderStatus,
)
from oms.services import orders_expire_due

logger = logging.getLogger(__name__)


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
        #: Live orders left out of the rebuilt book (their OCO partner ended), for
        #: the next batch to cancel.
        self.oco_orphans: set[int] = set()
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
        self.oco_orphans = oco_orphans(self.market.pk)
        for waiting in (False, True):
            orders = (
                live.filter(status=OrderStatus.WAITING)
                if waiting
                else live.exclude(status=OrderStatus.WAITING)
            )
            for order in orders.order_by("priority", "id").iterator(chunk_size=2000):
                if order.pk in self.oco_orphans:
                    continue
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
            if not requests and not transitions and not self.oco_orphans:
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
    kinds: list[str] = [OrderRequest.Kind.EXPIRE]
    if state.allows_cancel:
        kinds.append(OrderRequest.Kind.CANCEL)
    if state.allows_amend:
        kinds.append(OrderRequest.Kind.AMEND)
    if state.allows_place and (state.allows_match or state.is_auction):
        kinds.append(OrderRequest.Kind.PLACE)
    return kinds


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
