"""The matching worker's life cycle: ownership, rebuild, batches."""

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import (
    DatabaseError,
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
from exchange.matching.isolation import request_isolate, request_isolate_bare
from exchange.matching.ownership import MarketOwnership, OwnershipLost
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
    )
    return {symbol_id: price for symbol_id, price in last if price is not None}


class MatchingWorker:
    """Matches one market. ``run()`` blocks until ``stop_event`` is set.

    ``acquire_seconds`` is how often a standby retries the market's lock;
    ``request_attempts`` how many times a request is tried alone before it is
    isolated (both default to their settings).
    """

    def __init__(
        self,
        market_code: str,
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        stop_event: threading.Event | None = None,
        acquire_seconds: float | None = None,
        request_attempts: int | None = None,
    ) -> None:
        self.market_code = market_code
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.stop_event = stop_event or threading.Event()
        self.acquire_seconds = (
            settings.MATCHER_ACQUIRE_SECONDS
            if acquire_seconds is None
            else acquire_seconds
        )
        self.request_attempts = (
            settings.MATCHER_REQUEST_ATTEMPTS
            if request_attempts is None
            else request_attempts
        )
        self.market: Market | None = None
        self.books: dict[int, engine.OrderBook] = {}
        self.symbols: dict[int, Symbol] = {}
        self.is_owner = False
        #: The books reflect the database (False until rebuilt, and after a failure).
        self.is_ready = False
        #: How many times the books were rebuilt, and ownership taken (for tests and
        #: operators).
        self.rebuilds = 0
        self.acquisitions = 0
        self.ownership = MarketOwnership(market_code)
        self.waiter: MarketWaiter | None = None
        self._last_priority = 0
        #: Live orders left out of the rebuilt book (their OCO partner ended), for
        #: the next batch to cancel.
        self.oco_orphans: set[int] = set()
        self._last_expiry_scan = 0.0
        #: After a failed batch: the requests up to this id are retried one by one.
        self._retry_alone_until = 0
        #: Request id -> how many times it failed alone; and those whose isolation
        #: itself failed.
        self._failures: Counter[int] = Counter()
        self._isolation_failed: set[int] = set()
        self._last_error = ""
        #: The ids of the requests of the batch in progress.
        self._batch_request_ids: list[int] = []

    # -- life cycle ---------------------------------------------------------------

    def run(self) -> None:
        """Own the market, then match until stopped.

        Any error on the worker's connection, or a failed fence, gives up
        ownership, closes the connection and discards the books: they are rebuilt
        only after the market is acquired again. Any other failure of a batch
        discards the books, and the batch's requests are retried one by one
        (``_batch_failed``).
        """
        try:
            while not self.stop_event.is_set():
                try:
                    if self.is_owner or self._acquire():
                        self._step()
                except OwnershipLost as error:
                    self._ownership_drop(str(error))
                except Exception as error:
                    if self._connection_lost(error):
                        self._ownership_drop(f"database session lost: {error!r}")
                    else:
                        self._batch_failed(error)
        finally:
            if self.waiter is not None:
                self.waiter.close()
            if self.is_owner:
                self.ownership.release()
            connection.close()

    def _acquire(self) -> bool:
        """Try to take the market; a standby waits ``acquire_seconds`` between
        tries, so it takes over promptly when the owner's session ends."""
        if not self.ownership.try_acquire():
            self.stop_event.wait(self.acquire_seconds)
            return False
        self.is_owner = True
        self.is_ready = False
        self.acquisitions += 1
        self._retry_alone_until = 0
        logger.info(
            "matcher owns market %s (epoch %s)",
            self.market_code,
            self.ownership.epoch,
        )
        return True

    def _step(self) -> None:
        if not self.is_ready:
            self.rebuild()
        if self.waiter is None:
            self.waiter = MarketWaiter(self.market_code)
        if self.process_batch() == 0 and self.expire_due() == 0:
            self.waiter.wait(self.poll_seconds)

    def _connection_lost(self, error: Exception) -> bool:
        """Was ``error`` (or does it leave) the worker's session without the lock?

        A session killed mid-transaction may surface as any database error, and
        Django then reconnects silently, so ask the (new) session itself."""
        if isinstance(error, OperationalError | InterfaceError):
            return True
        try:
            return not self.ownership.is_held()
        except DatabaseError:
            return True

    def _ownership_drop(self, reason: str) -> None:
        """Give the market up, close the connection, discard the books; a standby
        whose database is unreachable waits a poll interval before retrying."""
        was_owner = self.is_owner
        if was_owner:
            logger.exception("matcher gives up market %s: %s", self.market_code, reason)
        else:
            logger.warning("matcher standby for %s: %s", self.market_code, reason)
        self.is_owner = False
        self.is_ready = False
        self.books = {}
        self.ownership.release()
        connection.close()
        self.stop_event.wait(self.acquire_seconds if was_owner else self.poll_seconds)

    def _batch_failed(self, error: Exception) -> None:
        """Discard the books; retry the failed batch's requests alone, counting
        the failures of a request that ran alone."""
        logger.exception("matching batch failed; rebuilding the book")
        self.is_ready = False
        ids = self._batch_request_ids
        if len(ids) == 1:
            self._failures[ids[0]] += 1
            self._last_error = f"{error.__class__.__name__}: {error}"
        if ids:
            self._retry_alone_until = max(self._retry_alone_until, ids[-1])
        self.stop_event.wait(min(self.poll_seconds, 0.1))

    def rebuild(self) -> None:
        """Load the market and rebuild every book from the stored resting orders."""
        self.rebuilds += 1
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
        requests and transitions were processed.

        The transaction first proves ownership (``MarketOwnership.fence``, which
        locks the ``MarketOwner`` row); raises ``OwnershipLost`` if it fails. A
        worker not started by ``run()`` owns the market for this transaction only
        (``own_for_transaction``). After
        a failed batch, requests are taken one at a time, and one that failed
        alone ``request_attempts`` times is isolated instead (``isolation``)."""
        assert self.market is not None and self.is_ready
        self._batch_request_ids = []
        with transaction.atomic(durable=True):
            if self.is_owner:
                self.ownership.fence()
            else:  # driven synchronously, not by run()
                self.ownership.own_for_transaction()
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
            limit = 1 if self._retry_alone_until else self.batch_size
            requests = list(inbox.order_by("id")[:limit])
            if self._retry_alone_until and (
                not requests or requests[0].pk >= self._retry_alone_until
            ):
                self._retry_alone_until = 0  # past the failed batch
            if requests and self._failures[requests[0].pk] >= self.request_attempts:
                self._isolate(market, requests[0], states, now)
                return 1
            self._batch_request_ids = [request.pk for request in requests]
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
        self._batch_request_ids = []
        return len(requests) + len(transitions)

    def _isolate(
        self,
        market: Market,
        request: OrderRequest,
        states: MarketTradingStates,
        now: datetime,
    ) -> None:
        """Isolate a request that failed alone too often (in the caller's
        transaction); if isolating it failed before, only record it."""
        attempts = self._failures[request.pk]
        error = self._last_error or "unknown error"
        if request.pk in self._isolation_failed:
            request_isolate_bare(
                market=market, request=request, attempts=attempts, error=error
            )
        else:
            # If booking the isolation fails too, the next try is the bare one.
            self._isolation_failed.add(request.pk)
            self._batch_request_ids = []
            request_isolate(
                worker=self,
                market=market,
                request=request,
                states=states,
                now=now,
                attempts=attempts,
                error=error,
            )
        del self._failures[request.pk]
        self._isolation_failed.discard(request.pk)

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
