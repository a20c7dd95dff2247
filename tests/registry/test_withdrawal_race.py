"""Real races on PostgreSQL: threads, each on its own connection, against one balance.

Withdrawal requests and buy orders contend for one cash balance; duplicate requests
share an idempotency key; two checkers decide the same withdrawals; a daily limit
is hit by many requests at once. Nothing is ever overdrawn and every amount held
or paid out is exactly what the successful requests asked for.
"""

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections

from oms.services import OrderError, OrderSpec, PlaceResult, order_place
from registry.models import Account, Transfer, WithdrawalLimit
from registry.services import RegistryError
from registry.transfers import (
    TransferResult,
    withdrawal_approve,
    withdrawal_cancel,
    withdrawal_request,
)
from tests import factories
from tests.conftest import assert_trading_consistent, balance_of

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 16


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; each thread has its
    own database connection, closed at its end. Returns results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except Exception as error:  # reported to the test
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    return results


def withdraw(user, account, amount: Decimal, key: str) -> TransferResult:
    return withdrawal_request(
        account=account,
        asset=account.currency,
        amount=amount,
        acting_user=user,
        idempotency_key=key,
    )


def buy(user, account, quantity: int) -> PlaceResult:
    spec = OrderSpec(
        account_id=account.pk,
        symbol="XSX:XS01",
        side="buy",
        type="limit",
        time_in_force="gtc",
        price=Decimal("10.00"),
        quantity=Decimal(quantity),
    )
    return order_place(user=user, spec=spec)


def test_withdrawals_and_buy_orders_racing_for_one_balance_never_overdraw_it(
    symbol, alice, alice_account
):
    aud = alice_account.currency
    start = balance_of(alice_account, aud)
    assert (start.available, start.held) == (Decimal("10000.00"), 0)
    # 16 threads, each sending a withdrawal and a buy (in alternating order):
    # 32 requests asking for 29,404.00 against 10,000.00.
    asked: dict[int, list[tuple[str, Decimal]]] = {
        i: [
            ("withdrawal", Decimal(500 + 75 * i) + Decimal("0.25")),
            ("buy", Decimal(10 * (40 + 5 * i))),
        ][:: 1 if i % 2 else -1]
        for i in range(THREADS)
    }

    def work(i: int) -> list[tuple[str, Decimal, Any]]:
        outcomes = []
        for kind, amount in asked[i]:
            try:
                if kind == "withdrawal":
                    result: Any = withdraw(alice, alice_account, amount, f"race-{i}")
                else:
                    result = buy(alice, alice_account, int(amount / 10))
            except (RegistryError, OrderError) as error:
                result = error
            outcomes.append((kind, amount, result))
        return outcomes

    results = run_concurrently(THREADS, work)

    assert all(isinstance(result, list) for result in results), results
    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == 2 * THREADS
    granted = [
        (k, a) for k, a, r in outcomes if isinstance(r, TransferResult | PlaceResult)
    ]
    refused = [(k, a, r) for k, a, r in outcomes if isinstance(r, Exception)]
    assert all(
        getattr(r, "code", None) == "insufficient_funds" for _, _, r in refused
    ), refused
    assert granted and refused
    final = balance_of(alice_account, aud)
    # never overdrawn, and held is exactly what the granted requests asked for
    assert final.available >= 0
    assert final.held == sum(a for _, a in granted)
    assert final.available + final.held == Decimal("10000.00")
    # nothing refused would have fit in what is left
    assert all(amount > final.available for _, amount, _ in refused)
    withdrawals = Transfer.objects.filter(kind="withdrawal")
    assert sorted(withdrawals.values_list("amount", flat=True)) == sorted(
        a for k, a in granted if k == "withdrawal"
    )
    assert set(withdrawals.values_list("status", flat=True)) == {"pending"}
    assert_trading_consistent()

    # when two checkers race to approve every pending withdrawal, and alice
    # races to cancel them
    checkers = [factories.user(f"checker{i}", is_staff=True) for i in range(2)]
    pending = list(withdrawals.values_list("pk", flat=True))

    def decide(i: int) -> list[Any]:
        done = []
        for transfer_id in pending:
            try:
                if i < 2:
                    withdrawal_approve(transfer_id=transfer_id, acting_user=checkers[i])
                else:
                    withdrawal_cancel(transfer_id=transfer_id, acting_user=alice)
                done.append(transfer_id)
            except RegistryError as error:
                assert error.code == "transfer_not_pending"
        return done

    decided = run_concurrently(3, decide)

    # then each withdrawal was decided exactly once
    assert all(isinstance(d, list) for d in decided), decided
    assert sorted(pk for done in decided for pk in done) == sorted(pending)
    statuses = dict(withdrawals.values_list("pk", "status"))
    paid = sum(t.amount for t in withdrawals if statuses[t.pk] == "completed")
    cancelled = sum(t.amount for t in withdrawals if statuses[t.pk] == "cancelled")
    assert set(statuses.values()) <= {"completed", "cancelled"}
    orders_held = sum(a for k, a in granted if k == "buy")
    final = balance_of(alice_account, aud)
    assert final.held == orders_held
    assert final.available == Decimal("10000.00") - orders_held - paid
    assert paid + cancelled == sum(a for k, a in granted if k == "withdrawal")
    omnibus = Account.objects.get(number="SYS-OMNIBUS")
    assert balance_of(omnibus, aud).available == Decimal("-10000.00") + paid
    assert_trading_consistent()


def test_concurrent_duplicates_of_one_request_make_one_withdrawal(alice, alice_account):
    results = run_concurrently(
        8, lambda i: withdraw(alice, alice_account, Decimal("125.00"), "dup-1")
    )

    assert all(isinstance(r, TransferResult) for r in results), results
    assert len({r.transfer.pk for r in results}) == 1
    assert sorted(r.created for r in results) == [False] * 7 + [True]
    assert Transfer.objects.filter(kind="withdrawal").count() == 1
    balance = balance_of(alice_account, alice_account.currency)
    assert (balance.available, balance.held) == (Decimal("9875.00"), Decimal("125.00"))
    assert_trading_consistent()


def test_a_daily_limit_holds_under_concurrent_requests(alice, alice_account):
    WithdrawalLimit.objects.create(
        account=alice_account,
        asset=alice_account.currency,
        daily_limit=Decimal("550.00"),
    )

    results = run_concurrently(
        THREADS,
        lambda i: withdraw(alice, alice_account, Decimal("100.00"), f"limit-{i}"),
    )

    granted = [r for r in results if isinstance(r, TransferResult)]
    refused = [r for r in results if isinstance(r, RegistryError)]
    assert (len(granted), len(refused)) == (5, THREADS - 5)
    assert {r.code for r in refused} == {"daily_limit_exceeded"}
    balance = balance_of(alice_account, alice_account.currency)
    assert (balance.available, balance.held) == (Decimal("9500.00"), Decimal("500.00"))
    assert_trading_consistent()
