"""What a batch changed, for hooks that keep derived data in the same transaction."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from exchange import engine
from exchange.models import Market, Symbol, Trade
from exchange.streams import Message
from oms.models import (
    Order,
)

logger = logging.getLogger(__name__)


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
