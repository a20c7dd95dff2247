"""The matching worker: the one bridge between the pure engine and the database.

One worker owns a market at a time (``ownership``). It rebuilds its books from the
stored open orders, then repeatedly takes a batch of requests from the market's
inbox in arrival order, applies them to the in-memory books (``batch``) and
persists the whole outcome (order states, trades, ledger postings, events, stream
sequences) in one transaction (``booking``). Messages are published after commit.
If anything fails the transaction rolls back, the in-memory books are discarded
and rebuilt from the database, so a crash at any instant loses no acknowledged
order and duplicates no fill.

This package imports ``oms``: it is the one place that orchestrates engine results
into orders, trades and ledger postings.
"""

from exchange.matching.commands import (
    book_topic,
    new_order_command,
    restore_command,
    trades_topic,
)
from exchange.matching.outcome import (
    BatchHook,
    BatchOutcome,
    _batch_hooks,
    batch_hook_register,
)
from exchange.matching.ownership import MarketOwnership, advisory_key, market_owned
from exchange.matching.supervisor import MatcherSupervisor, matcher_threads_start
from exchange.matching.worker import MatchingWorker

__all__ = [
    "BatchHook",
    "BatchOutcome",
    "MarketOwnership",
    "MatcherSupervisor",
    "MatchingWorker",
    "_batch_hooks",
    "advisory_key",
    "batch_hook_register",
    "book_topic",
    "market_owned",
    "matcher_threads_start",
    "new_order_command",
    "restore_command",
    "trades_topic",
]
