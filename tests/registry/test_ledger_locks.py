"""The ledger's balance locks, on PostgreSQL with real concurrent connections.

A ``LedgerBatch`` locks exactly the (account, asset) balances it is given, in one
ascending (account, asset) order, creating missing rows before it locks anything;
so batches whose key sets overlap never deadlock, whatever order their callers
list the keys in and whichever of them creates a row.
"""

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from django.db import connection, connections, transaction

from registry.ledger import BalanceKey, LedgerBatch, Line
from registry.models import Balance, Bucket
from tests import factories
from tests.conftest import assert_ledger_balanced

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``work`` on a thread with its own connection; the list gets its result
    (or exception)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as error:  # reported to the test
            result.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def wait_until_blocked(pid: int, timeout: float = 10.0) -> None:
    """Wait until backend ``pid`` waits for a lock held by another transaction."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            )
            row = cursor.fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never blocked")


def move(keys: list[BalanceKey], source: BalanceKey, target: BalanceKey) -> None:
    """One batch over ``keys`` (in the caller's order) moving 1 from ``source``."""
    with transaction.atomic():
        batch = LedgerBatch(keys)
        batch.post(
            kind="test",
            lines=[
                Line(*source, Bucket.AVAILABLE, D(-1)),
                Line(*target, Bucket.AVAILABLE, D(1)),
            ],
        )
        batch.flush()


def move_after(
    barrier: threading.Barrier,
    keys: list[BalanceKey],
    source: BalanceKey,
    target: BalanceKey,
) -> str:
    barrier.wait(10)
    move(keys, source, target)
    return "ok"


def test_a_batch_locks_only_the_pairs_it_is_given_not_their_cross_product():
    # given two accounts that each have AUD and XAU balances
    aud, xau = factories.currency("AUD"), factories.currency("XAU")
    one, two = factories.account(cash="10.00"), factories.account(cash="10.00")
    move([(one.pk, xau.pk)], (one.pk, xau.pk), (one.pk, xau.pk))
    move([(two.pk, xau.pk)], (two.pk, xau.pk), (two.pk, xau.pk))
    assert Balance.objects.filter(account__in=[one, two]).count() == 4
    # when a batch over (one, AUD) and (two, XAU) holds its locks
    with transaction.atomic():
        LedgerBatch([(two.pk, xau.pk), (one.pk, aud.pk)])

        def lock_the_others() -> list[int]:
            with transaction.atomic():
                return [
                    Balance.objects.select_for_update(nowait=True)
                    .get(account=account, asset=asset)
                    .pk
                    for account, asset in ((one, xau), (two, aud))
                ]

        thread, result = in_thread(lock_the_others)
        thread.join(10)
    # then another transaction locks the two other balances without waiting
    assert len(result) == 1 and isinstance(result[0], list), result
    assert len(result[0]) == 2


def test_a_batch_waiting_for_a_new_row_holds_no_lock_a_creator_needs_next():
    # given C created (low) in an open transaction, and will lock (high) next: the
    # global order. A batch over both, listed high first, must wait for C without
    # holding (high), or the two deadlock.
    aud = factories.currency("AUD")
    low_account, high_account = factories.account(), factories.account(cash="5.00")
    low, high = (low_account.pk, aud.pk), (high_account.pk, aud.pk)
    assert not Balance.objects.filter(account=low_account).exists()
    created, go = threading.Event(), threading.Event()
    pids: dict[str, int] = {}

    def creator() -> str:
        pids["C"] = backend_pid()
        with transaction.atomic():
            LedgerBatch([low])
            created.set()
            assert go.wait(10)
            LedgerBatch([high])  # ascending across calls: still the global order
        return "C done"

    def batch() -> str:
        pids["A"] = backend_pid()
        move([high, low], high, low)
        return "A done"

    creator_thread, creator_result = in_thread(creator)
    assert created.wait(10)
    batch_thread, batch_result = in_thread(batch)
    time.sleep(0.05)
    wait_until_blocked(pids["A"])
    # when C goes on to lock (high)
    go.set()
    creator_thread.join(15)
    batch_thread.join(15)
    # then neither was chosen as a deadlock victim, and A's move was booked
    assert creator_result == ["C done"], creator_result
    assert batch_result == ["A done"], batch_result
    assert Balance.objects.get(account=low_account).available == D("1.00")
    assert Balance.objects.get(account=high_account).available == D("4.00")
    assert_ledger_balanced()


def test_concurrent_batches_over_overlapping_keys_in_opposite_orders_never_deadlock():
    aud = factories.currency("AUD")
    rounds = 25
    errors: list[object] = []
    for _ in range(rounds):
        # given two funded accounts and one with no AUD balance row yet
        one, two = factories.account(cash="10.00"), factories.account(cash="10.00")
        new = factories.account()
        keys = [(one.pk, aud.pk), (two.pk, aud.pk), (new.pk, aud.pk)]
        barrier = threading.Barrier(4)
        # when four batches run at once, listing the keys in opposite orders,
        # two of them racing to create the new row
        workers = [
            in_thread(partial(move_after, barrier, keys, keys[0], keys[2])),
            in_thread(partial(move_after, barrier, keys[::-1], keys[1], keys[2])),
            in_thread(partial(move_after, barrier, keys[1::-1], keys[0], keys[1])),
            in_thread(partial(move_after, barrier, keys[:2], keys[1], keys[0])),
        ]
        for thread, result in workers:
            thread.join(20)
            assert not thread.is_alive()
            errors.extend(r for r in result if r != "ok")
        # then every one was booked
        assert Balance.objects.get(account=new, asset=aud).available == D("2.00")
    assert errors == []
    assert_ledger_balanced()


def test_a_batch_costs_two_queries_to_lock_and_three_to_flush(
    django_assert_max_num_queries,
):
    aud, xau = factories.currency("AUD"), factories.currency("XAU")
    accounts = [factories.account(cash="10.00") for _ in range(5)]
    keys = [(a.pk, aud.pk) for a in accounts] + [(a.pk, xau.pk) for a in accounts]
    with transaction.atomic():
        # five of the ten rows are missing: created and locked in two statements
        with django_assert_max_num_queries(2):
            batch = LedgerBatch(keys)
        assert sorted(batch.balances) == sorted(keys)
        batch.post(
            kind="test",
            lines=[
                Line(accounts[0].pk, aud.pk, Bucket.AVAILABLE, D(-3)),
                Line(accounts[4].pk, aud.pk, Bucket.AVAILABLE, D(3)),
            ],
        )
        with django_assert_max_num_queries(3):
            batch.flush()
    assert Balance.objects.filter(account__in=accounts).count() == 10
    assert Balance.objects.get(account=accounts[4], asset=aud).available == D("13.00")
    assert_ledger_balanced()
