"""The fault suite's invariant checks catch what they claim to (fast, no processes)."""

from decimal import Decimal

import pytest

from oms.models import Order
from registry.models import Balance
from tests.faults.invariants import assert_invariants
from tests.trading import match_now, place


@pytest.fixture
def traded(alice_client, bob_client, alice_account, bob_account):
    """Two resting sells at one price, a buy taking part of the first, a buy
    resting below: a book with time priority at stake."""
    first = place(alice_client, alice_account, side="sell", price="10.00", quantity="5")
    second = place(bob_client, bob_account, side="sell", price="10.00", quantity="5")
    place(bob_client, bob_account, side="buy", price="10.00", quantity="2")
    resting = place(alice_client, alice_account, side="buy", price="9.00", quantity="3")
    match_now()
    return {"first": first["id"], "second": second["id"], "resting": resting["id"]}


def test_it_passes_on_a_consistent_market(traded):
    assert_invariants(placed=traded.values())


def test_it_catches_a_held_amount_that_no_order_needs(traded, alice_account):
    Balance.objects.filter(account=alice_account, asset__code="AUD").update(
        held=Decimal("27.01")
    )
    with pytest.raises(AssertionError):
        assert_invariants(placed=traded.values())


def test_it_catches_a_lost_acknowledged_order(traded):
    with pytest.raises(AssertionError, match="acknowledged orders lost"):
        assert_invariants(placed=[*traded.values(), 999_999])


def test_it_catches_a_lost_acknowledged_cancel(traded):
    with pytest.raises(AssertionError, match="acknowledged cancels lost"):
        assert_invariants(placed=traded.values(), cancelled=[traded["resting"]])


def test_it_catches_a_rebuilt_book_out_of_time_priority(traded):
    # the second sell stored ahead of the first: a restart would rank them wrong
    first = Order.objects.get(pk=traded["first"])
    assert first.priority is not None
    Order.objects.filter(pk=traded["second"]).update(priority=first.priority - 1)
    with pytest.raises(AssertionError, match="first_difference"):
        assert_invariants(placed=traded.values())
