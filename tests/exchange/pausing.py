"""Pausing a real matching batch at a chosen moment (for race tests)."""

import threading
import time

from exchange.matching import MatchingWorker
from exchange.matching.batch import _Batch


class PauseBeforeMakers:
    """Wraps ``_Batch._load_orders`` (install with ``install(monkeypatch)``): the
    first batch to run afterwards locks its requests' orders, then, when it is
    about to lock further orders (those its engine events name: the makers),
    signals ``paused`` and waits for ``resume``. With ``before_lock=1`` it pauses
    before its first lock instead (it has read its requests, locked nothing)."""

    def __init__(self, before_lock: int = 2) -> None:
        self.before_lock = before_lock
        self.calls = 0
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.original = _Batch._load_orders

    def install(self, monkeypatch) -> "PauseBeforeMakers":
        def load_orders(batch: _Batch, order_ids: set[int]) -> None:
            if order_ids - batch.states.keys():
                self.calls += 1
                if self.calls == self.before_lock:
                    self.paused.set()
                    assert self.resume.wait(30)
            self.original(batch, order_ids)

        monkeypatch.setattr(_Batch, "_load_orders", load_orders)
        return self


class HoldBatches:
    """Wraps ``MatchingWorker.process_batch`` (``install(monkeypatch)``): the
    worker takes no batch until ``release()``, so requests queued meanwhile are
    matched together in one batch."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.original = MatchingWorker.process_batch

    def install(self, monkeypatch) -> "HoldBatches":
        def process_batch(worker: MatchingWorker) -> int:
            assert self.gate.wait(30)
            return self.original(worker)

        monkeypatch.setattr(MatchingWorker, "process_batch", process_batch)
        # A batch that began before the wrap ends first (it finds no request).
        time.sleep(0.5)
        return self

    def release(self) -> None:
        self.gate.set()
