"""A Hypothesis state machine over the whole money path, on PostgreSQL.

Random deposits, withdrawals (requested, approved, rejected), orders of several
types, matching, cancels, amends, trade busts and settlements (a T+2 market) run
through the real services and the real matching worker (driven step by step).
After every step: every asset sums to zero over the ledger, nothing available or
unsettled is negative, every open order holds exactly what its rest needs and the
held buckets equal the open orders' reservations plus the pending withdrawals, and
the stored balances (and cost bases) equal the ledger.
"""

import itertools
import uuid
from datetime import date
from decimal import Decimal

import pytest
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from exchange.busts import trade_bust
from exchange.matching import MatchingWorker
from exchange.models import Trade
from exchange.settlement import settlement_run
from oms.models import OPEN_STATUSES, Order
from oms.services import (
    AmendSpec,
    OrderError,
    OrderSpec,
    order_amend,
    order_buy_reservation,
    order_cancel,
    order_place,
)
from registry.models import Balance, Posting, Transfer
from registry.services import RegistryError, cash_deposit
from registry.transfers import (
    withdrawal_approve,
    withdrawal_reject,
    withdrawal_request,
)
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal
PRICES = st.sampled_from([D("9.90"), D("9.95"), D("10.00"), D("10.05"), D("10.10")])
QUANTITIES = st.integers(min_value=1, max_value=40).map(D)


def open_order_needs(order: Order) -> Decimal:
    """What an open order must hold for its unfilled rest."""
    if order.side == Order.Side.SELL:
        return order.remaining_quantity
    return order_buy_reservation(order)


def assert_money_invariants() -> None:
    """Three queries: the ledger by (account, asset, bucket), the balances and the
    open orders."""
    ledger: dict[tuple[int, int, str], Decimal] = {}
    per_asset: dict[int, Decimal] = {}
    for row in Posting.objects.values("account_id", "asset_id", "bucket").annotate(
        total=Sum("amount")
    ):
        ledger[(row["account_id"], row["asset_id"], row["bucket"])] = row["total"]
        per_asset[row["asset_id"]] = per_asset.get(row["asset_id"], D(0)) + row["total"]
    assert all(total == 0 for total in per_asset.values()), per_asset
    held: dict[tuple[int, int], Decimal] = {}
    for order in Order.objects.filter(status__in=OPEN_STATUSES).select_related(
        "market", "symbol__currency"
    ):
        if order.status != "pending":
            assert order.held_amount == open_order_needs(order), order
        key = (order.account_id, order.held_asset_id)
        held[key] = held.get(key, D(0)) + order.held_amount
    for transfer in Transfer.objects.filter(
        kind=Transfer.Kind.WITHDRAWAL, status=Transfer.Status.PENDING
    ):
        key = (transfer.account_id, transfer.asset_id)
        held[key] = held.get(key, D(0)) + transfer.amount
    for balance in Balance.objects.all():
        key = (balance.account_id, balance.asset_id)
        for bucket in ("available", "held", "unsettled"):
            assert getattr(balance, bucket) == ledger.get((*key, bucket), 0), (
                balance,
                bucket,
            )
        if balance.allow_negative:
            continue
        assert balance.available >= 0, balance
        assert balance.unsettled >= 0, balance
        assert balance.held == held.get(key, 0), balance


class MoneyMachine(RuleBasedStateMachine):
    """Two clients trading one symbol through the OMS and the matcher."""

    @initialize()
    def set_up(self) -> None:
        # A fresh T+2 market, symbol and accounts per example: every example
        # starts from the same state, so Hypothesis can replay and shrink it.
        market = factories.market(f"SM{next(_SYMBOL_NUMBERS)}", settlement_days=2)
        self.symbol = factories.symbol(market, "XS01")
        self.staff = factories.user(is_staff=True)
        self.users = [factories.user(), factories.user()]
        self.accounts = [
            factories.account(user, cash="500.00", holdings={self.symbol: "60"})
            for user in self.users
        ]
        self.market = market
        self.worker = MatchingWorker(market.code, batch_size=50)
        self.worker.rebuild()
        self.orders: list[tuple[int, int]] = []  # (order id, client index)

    @rule(client=st.integers(0, 1), amount=st.integers(1, 300).map(D))
    def deposit(self, client: int, amount: Decimal) -> None:
        account = self.accounts[client]
        cash_deposit(
            account=account, asset=account.currency, amount=amount, acting_user=None
        )

    @rule(
        client=st.integers(0, 1),
        side=st.sampled_from(["buy", "sell"]),
        kind=st.sampled_from(["limit", "limit", "limit", "ioc", "market", "iceberg"]),
        price=PRICES,
        quantity=QUANTITIES,
    )
    def place(
        self, client: int, side: str, kind: str, price: Decimal, quantity: Decimal
    ) -> None:
        spec = OrderSpec(
            account_id=self.accounts[client].pk,
            symbol=self.symbol.identifier,
            side=side,
            type="market" if kind == "market" else "limit",
            time_in_force="ioc" if kind in ("ioc", "market") else "gtc",
            quantity=quantity,
            price=None if kind == "market" else price,
            display_quantity=(
                max(D(1), quantity // 3) if kind == "iceberg" and quantity > 1 else None
            ),
            self_trade_prevention="cancel_oldest",
        )
        try:
            order = order_place(user=self.users[client], spec=spec).order
        except OrderError as error:
            assert error.code in {
                "insufficient_funds",
                "insufficient_holdings",
                "no_reference_price",
            }, error.code
            return
        self.orders.append((order.pk, client))

    @rule()
    def match(self) -> None:
        while self.worker.process_batch():
            pass

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order_id, client = data.draw(st.sampled_from(self.orders))
        try:
            order_cancel(user=self.users[client], order_id=order_id)
        except OrderError as error:
            assert error.code == "order_not_open"

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), quantity=QUANTITIES, price=PRICES)
    def amend(self, data: st.DataObject, quantity: Decimal, price: Decimal) -> None:
        order_id, client = data.draw(st.sampled_from(self.orders))
        change = data.draw(st.sampled_from(["quantity", "price", "both"]))
        amend = AmendSpec(
            quantity=None if change == "price" else quantity,
            price=None if change == "quantity" else price,
        )
        try:
            order_amend(user=self.users[client], order_id=order_id, amend=amend)
        except OrderError as error:
            assert error.code in {
                "order_not_open",
                "not_amendable",
                "nothing_to_amend",
                "quantity_below_filled",
                "insufficient_funds",
                "insufficient_holdings",
            }, error.code

    @rule(client=st.integers(0, 1), amount=st.integers(1, 400).map(D))
    def withdraw(self, client: int, amount: Decimal) -> None:
        account = self.accounts[client]
        try:
            withdrawal_request(
                account=account,
                asset=account.currency,
                amount=amount,
                acting_user=self.users[client],
                idempotency_key=uuid.uuid4().hex,
            )
        except RegistryError as error:
            assert error.code == "insufficient_funds", error.code

    @rule(data=st.data(), approve=st.booleans())
    def decide_withdrawal(self, data: st.DataObject, approve: bool) -> None:
        pending = list(
            Transfer.objects.filter(
                account__in=self.accounts,
                kind=Transfer.Kind.WITHDRAWAL,
                status=Transfer.Status.PENDING,
            ).order_by("pk")
        )
        if not pending:
            return
        transfer = data.draw(st.sampled_from(pending))
        if approve:
            withdrawal_approve(transfer_id=transfer.pk, acting_user=self.staff)
        else:
            withdrawal_reject(
                transfer_id=transfer.pk, acting_user=self.staff, reason="test"
            )

    @rule(data=st.data())
    def bust(self, data: st.DataObject) -> None:
        trades = list(
            Trade.objects.filter(symbol=self.symbol, busted_at__isnull=True).order_by(
                "pk"
            )
        )
        if not trades:
            return
        trade = data.draw(st.sampled_from(trades))
        try:
            trade_bust(trade=trade, acting_user=self.staff, reason="test")
        except RegistryError as error:
            assert error.code == "bust_insufficient_balance", error.code

    @rule()
    def settle(self) -> None:
        settlement_run(as_of=date(2100, 1, 1), market_ids=[self.market.pk])

    @invariant()
    def money_is_conserved_and_reserved_exactly(self) -> None:
        assert_money_invariants()


_SYMBOL_NUMBERS = itertools.count(1)


def test_money_path_state_machine(db):
    MoneyMachine.TestCase.settings = settings(
        max_examples=8,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
        ],
    )
    MoneyMachine.TestCase().runTest()
