"""Fee schedules: which rates apply, the fee arithmetic, and the audited staff
services and admin pages."""

from decimal import Decimal

import pytest
from django.urls import reverse

from exchange.fees import (
    FeeRates,
    buy_cash_needed,
    fee_group_delete,
    fee_group_save,
    fee_rates_for,
    fee_schedule_delete,
    fee_schedule_save,
    fill_fee,
)
from exchange.models import FeeSchedule
from registry.models import Account, AuditRecord, FeeGroup
from registry.services import RegistryError
from tests import factories
from tests.registry.test_admin import audit_trail, change_form_data

pytestmark = pytest.mark.django_db


def schedule_for(market, maker, taker, min_fee="0", fee_group=None):
    return fee_schedule_save(
        schedule=FeeSchedule(
            market=market,
            fee_group=fee_group,
            maker_fee_bps=Decimal(maker),
            taker_fee_bps=Decimal(taker),
            min_fee=Decimal(min_fee),
        ),
        acting_user=None,
    )


# Which rates apply --------------------------------------------------------------------


def test_rates_come_from_the_group_then_the_market_default_then_the_market(
    market, alice_account, bob_account
):
    market.maker_fee_bps, market.taker_fee_bps = Decimal(3), Decimal(4)
    market.save()
    other = factories.market("XOT")
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=None)
    alice_account.fee_group = pro
    alice_account.save()

    # no schedule at all: the market's own rates, no minimum
    assert fee_rates_for(market=market, account=alice_account) == FeeRates(
        Decimal(3), Decimal(4), Decimal(0)
    )
    # a default schedule applies to everyone without a group schedule
    schedule_for(market, "5", "10", "1.00")
    assert fee_rates_for(market=market, account=alice_account) == FeeRates(
        Decimal(5), Decimal(10), Decimal("1.00")
    )
    # the group's own schedule on this market wins for its accounts
    schedule_for(market, "1", "2", "0.50", fee_group=pro)
    schedule_for(other, "7", "8", fee_group=pro)
    assert fee_rates_for(market=market, account=alice_account) == FeeRates(
        Decimal(1), Decimal(2), Decimal("0.50")
    )
    assert fee_rates_for(market=market, account=bob_account) == FeeRates(
        Decimal(5), Decimal(10), Decimal("1.00")
    )


# The arithmetic -----------------------------------------------------------------------


def test_each_fill_pays_the_growth_of_the_orders_cumulative_fee(market):
    aud = market.currency
    rates = FeeRates(Decimal(5), Decimal(10), Decimal("2.00"))
    accrued = charged = Decimal(0)
    fees = []
    for value, is_taker in (
        (Decimal("900.00"), False),
        (Decimal("2700.00"), False),
        (Decimal("5400.00"), True),
        (Decimal("3.33"), True),
    ):
        fee, accrued = fill_fee(
            rates=rates,
            is_taker=is_taker,
            value=value,
            accrued=accrued,
            charged=charged,
            currency=aud,
        )
        charged += fee
        fees.append(fee)
    # accrued 0.45, 1.80, 7.20, 7.20333: cumulative 2.00, 2.00, 7.20, 7.20
    assert fees == [Decimal("2.00"), Decimal(0), Decimal("5.20"), Decimal(0)]
    assert (accrued, charged) == (Decimal("7.203330"), Decimal("7.20"))


def test_the_buy_reservation_is_the_exact_worst_case(market):
    aud = market.currency
    rates = FeeRates(Decimal(5), Decimal(10), Decimal("2.00"))
    # 1000.05 at 10 bps = 1.00005: rounded down like the charge
    assert buy_cash_needed(
        rates=rates, price=Decimal("1000.05"), quantity=Decimal(1), currency=aud
    ) == Decimal("1002.05")
    assert buy_cash_needed(
        rates=rates, price=Decimal("10.00"), quantity=Decimal(500), currency=aud
    ) == Decimal("5005.00")
    # after fills that accrued 0.45 and were charged the 2.00 minimum
    assert buy_cash_needed(
        rates=rates,
        price=Decimal("9.00"),
        quantity=Decimal(900),
        currency=aud,
        accrued=Decimal("0.45"),
        charged=Decimal("2.00"),
    ) == Decimal("8106.55")
    # nothing left to fill: nothing left to hold
    assert (
        buy_cash_needed(
            rates=rates,
            price=Decimal("9.00"),
            quantity=Decimal(0),
            currency=aud,
            accrued=Decimal("4.50"),
            charged=Decimal("4.50"),
        )
        == 0
    )


# Services -----------------------------------------------------------------------------


def test_schedule_changes_are_validated_and_audited(market, admin_user):
    schedule = fee_schedule_save(
        schedule=FeeSchedule(
            market=market, maker_fee_bps=Decimal(5), taker_fee_bps=Decimal(10)
        ),
        acting_user=admin_user,
        reason="launch pricing",
    )
    schedule.min_fee = Decimal("1.50")
    fee_schedule_save(schedule=schedule, acting_user=admin_user)

    records = list(
        AuditRecord.objects.filter(object_type="exchange.feeschedule")
        .order_by("pk")
        .values_list("action", "actor_id", "reason", "changes")
    )
    assert records == [
        (
            "fee_schedule_create",
            admin_user.pk,
            "launch pricing",
            {
                "fee_group_id": None,
                "maker_fee_bps": "5",
                "taker_fee_bps": "10",
                "min_fee": "0",
                "market": "XSX",
            },
        ),
        (
            "fee_schedule_change",
            admin_user.pk,
            "",
            {"min_fee": ["0", "1.5"], "market": "XSX"},
        ),
    ]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_fee": Decimal("0.001")}, "min_fee"),
        ({"min_fee": Decimal(-1)}, "min_fee"),
        ({"taker_fee_bps": Decimal(10000)}, "taker_fee_bps"),
        ({"maker_fee_bps": Decimal(-1)}, "maker_fee_bps"),
    ],
)
def test_a_bad_schedule_is_refused_and_nothing_is_saved(market, changes, field):
    schedule = FeeSchedule(
        market=market, maker_fee_bps=Decimal(5), taker_fee_bps=Decimal(10)
    )
    for name, value in changes.items():
        setattr(schedule, name, value)
    with pytest.raises(RegistryError) as error:
        fee_schedule_save(schedule=schedule, acting_user=None)
    assert (error.value.code, error.value.field) == ("invalid_fee_schedule", field)
    assert not FeeSchedule.objects.exists()
    assert not AuditRecord.objects.exists()


def test_a_market_has_one_default_schedule_and_one_per_group(market):
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=None)
    schedule_for(market, "5", "10")
    schedule_for(market, "1", "2", fee_group=pro)
    for group in (None, pro):
        with pytest.raises(RegistryError) as error:
            schedule_for(market, "3", "4", fee_group=group)
        assert error.value.code == "invalid_fee_schedule"
    assert FeeSchedule.objects.count() == 2


def test_a_group_in_use_cannot_be_deleted(market, alice_account, admin_user):
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=admin_user)
    alice_account.fee_group = pro
    alice_account.save()
    with pytest.raises(RegistryError) as error:
        fee_group_delete(fee_group=pro, acting_user=admin_user)
    assert error.value.code == "fee_group_in_use"

    alice_account.fee_group = None
    alice_account.save()
    schedule = schedule_for(market, "1", "2", fee_group=pro)
    fee_schedule_delete(schedule=schedule, acting_user=admin_user)
    fee_group_delete(fee_group=pro, acting_user=admin_user)
    assert not FeeGroup.objects.exists()
    assert list(
        AuditRecord.objects.filter(action__startswith="fee_")
        .order_by("pk")
        .values_list("action", "actor_id")
    ) == [
        ("fee_group_create", admin_user.pk),
        ("fee_schedule_create", None),
        ("fee_schedule_delete", admin_user.pk),
        ("fee_group_delete", admin_user.pk),
    ]


# Admin --------------------------------------------------------------------------------


def test_staff_add_a_group_and_its_schedule_in_the_admin_audited(
    admin_client, admin_user, market
):
    response = admin_client.post(
        reverse("admin:registry_feegroup_add"),
        {"name": "pro", "description": "Active traders"},
    )
    assert response.status_code == 302
    pro = FeeGroup.objects.get()
    response = admin_client.post(
        reverse("admin:exchange_feeschedule_add"),
        {
            "market": market.pk,
            "fee_group": pro.pk,
            "maker_fee_bps": "1",
            "taker_fee_bps": "2.5",
            "min_fee": "0.50",
        },
    )
    assert response.status_code == 302
    schedule = FeeSchedule.objects.get()
    assert (schedule.taker_fee_bps, schedule.min_fee) == (
        Decimal("2.5"),
        Decimal("0.50"),
    )
    assert audit_trail(pro) == [("fee_group_create", admin_user.pk)]
    assert audit_trail(schedule) == [("fee_schedule_create", admin_user.pk)]
    for name in ("registry_feegroup", "exchange_feeschedule"):
        assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_a_bad_schedule_in_the_admin_shows_the_error_and_saves_nothing(
    admin_client, market
):
    response = admin_client.post(
        reverse("admin:exchange_feeschedule_add"),
        {
            "market": market.pk,
            "maker_fee_bps": "1",
            "taker_fee_bps": "2",
            "min_fee": "0.005",
        },
    )
    assert response.status_code == 200
    assert "min_fee" in response.context["adminform"].form.errors
    assert not FeeSchedule.objects.exists()
    assert not AuditRecord.objects.exists()


def test_staff_put_an_account_in_a_group_and_let_it_trade_unsettled_proceeds(
    admin_client, admin_user, alice_account
):
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=None)
    url = reverse("admin:registry_account_change", args=[alice_account.pk])
    data = change_form_data(admin_client.get(url))
    data.update(fee_group=pro.pk, trade_unsettled_proceeds="on")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    account = Account.objects.get(pk=alice_account.pk)
    assert (account.fee_group, account.trade_unsettled_proceeds) == (pro, True)
    record = AuditRecord.objects.get(action="account_change")
    assert (record.actor_id, record.changes) == (
        admin_user.pk,
        {
            "fee_group": [None, str(pro.pk)],
            "trade_unsettled_proceeds": ["False", "True"],
        },
    )
