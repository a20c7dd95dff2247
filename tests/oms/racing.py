"""Holding the matching worker at the worst moment: inside its batch transaction,
after it has written the batch's outcome and before it commits."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from exchange.matching import batch as batch_module


class PausedBatch:
    """Holds the matching worker after ``persist`` (its row locks held, nothing
    committed) the first time ``when(batch)`` is true, until ``release``."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, when: Callable[[Any], bool]
    ) -> None:
        self.paused = threading.Event()
        self.go = threading.Event()
        original = batch_module._Batch.persist

        def persist(batch: Any, transitions: dict[int, bool]) -> None:
            original(batch, transitions)
            if not self.paused.is_set() and when(batch):
                self.paused.set()
                assert self.go.wait(10)

        monkeypatch.setattr(batch_module._Batch, "persist", persist)

    def release(self) -> None:
        self.go.set()


def lock_waiters() -> int:
    """How many sessions of the test database wait for a lock now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]
