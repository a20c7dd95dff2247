"""Trading sessions: the timetable in the market's timezone (weekends, holidays,
early closes, DST changes) and the schedule run that moves markets along it."""

import threading
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

import pytest
import time_machine
from django.db import connections

from exchange import services
from exchange.calendar import scheduled_state
from exchange.models import Holiday, Market, MarketSession, SpecialDay, Symbol
from exchange.services import (
    market_set_state,
    market_timetable_set,
    market_transition_hook_register,
    market_transition_hook_unregister,
    sessions_advance,
    symbol_circuit_break,
)
from registry.models import AuditRecord
from registry.services import RegistryError
from tests import factories

pytestmark = pytest.mark.django_db

S = Market.State

#: A US-style day: pre-open from 04:00, a two-minute opening freeze, continuous
#: trading 09:30-15:50, then a ten-minute closing auction.
NEW_YORK_DAY = [
    (time(4, 0), S.PRE_OPEN),
    (time(9, 28), S.OPENING_AUCTION),
    (time(9, 30), S.OPEN),
    (time(15, 50), S.CLOSING_AUCTION),
    (time(16, 0), S.CLOSED),
]
SYDNEY_DAY = [
    (time(7, 0), S.PRE_OPEN),
    (time(10, 0), S.OPEN),
    (time(16, 0), S.CLOSING_AUCTION),
    (time(16, 10), S.CLOSED),
]


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def at(market: Market, instant: datetime) -> tuple[str, datetime | None]:
    return scheduled_state(market, instant)


def just_before(instant: datetime) -> datetime:
    return instant - timedelta(microseconds=1)


@pytest.fixture
def new_york(db):
    market = factories.market("XNY", timezone="America/New_York")
    market_timetable_set(market=market, entries=NEW_YORK_DAY, acting_user=None)
    return market


@pytest.fixture
def sydney(db):
    market = factories.market("XSY", timezone="Australia/Sydney")
    market_timetable_set(market=market, entries=SYDNEY_DAY, acting_user=None)
    return market


# -- scheduled_state -------------------------------------------------------------------


def test_new_york_around_the_open_in_winter(new_york):
    # Friday 6 March 2026, EST (UTC-5): 09:28 is 14:28 UTC, 09:30 is 14:30 UTC.
    assert at(new_york, just_before(utc(2026, 3, 6, 14, 28))) == (
        "pre_open",
        utc(2026, 3, 6, 14, 28),
    )
    assert at(new_york, utc(2026, 3, 6, 14, 28)) == (
        "opening_auction",
        utc(2026, 3, 6, 14, 30),
    )
    assert at(new_york, just_before(utc(2026, 3, 6, 14, 30))) == (
        "opening_auction",
        utc(2026, 3, 6, 14, 30),
    )
    assert at(new_york, utc(2026, 3, 6, 14, 30)) == (
        "open",
        utc(2026, 3, 6, 20, 50),
    )


def test_new_york_across_the_weekend_and_the_spring_dst_change(new_york):
    # Clocks go forward on Sunday 8 March 2026: Monday's 04:00 EDT is 08:00 UTC,
    # not 09:00 UTC as on Friday.
    friday_close = utc(2026, 3, 6, 21, 0)
    monday_pre_open = utc(2026, 3, 9, 8, 0)
    assert at(new_york, just_before(friday_close)) == ("closing_auction", friday_close)
    assert at(new_york, friday_close) == ("closed", monday_pre_open)
    assert at(new_york, utc(2026, 3, 7, 15, 0)) == ("closed", monday_pre_open)
    assert at(new_york, utc(2026, 3, 8, 23, 59)) == ("closed", monday_pre_open)
    assert at(new_york, just_before(monday_pre_open)) == ("closed", monday_pre_open)
    assert at(new_york, monday_pre_open) == ("pre_open", utc(2026, 3, 9, 13, 28))
    # 09:30 EDT = 13:30 UTC; at 14:30 UTC (Friday's open instant) it has long
    # been open, until 15:50 EDT = 19:50 UTC.
    assert at(new_york, just_before(utc(2026, 3, 9, 13, 30))) == (
        "opening_auction",
        utc(2026, 3, 9, 13, 30),
    )
    assert at(new_york, utc(2026, 3, 9, 13, 30)) == ("open", utc(2026, 3, 9, 19, 50))
    assert at(new_york, utc(2026, 3, 9, 14, 30)) == ("open", utc(2026, 3, 9, 19, 50))


def test_sydney_across_easter_holidays_and_the_autumn_dst_change(sydney):
    # Good Friday (3 April) and Easter Monday (6 April) are holidays; the clocks
    # go back on Sunday 5 April 2026 (AEDT UTC+11 -> AEST UTC+10).
    Holiday.objects.create(market=sydney, date=date(2026, 4, 3), name="Good Friday")
    Holiday.objects.create(market=sydney, date=date(2026, 4, 6), name="Easter Monday")
    thursday_open = utc(2026, 4, 1, 23, 0)  # 10:00 AEDT Thursday 2 April
    thursday_close = utc(2026, 4, 2, 5, 10)  # 16:10 AEDT
    tuesday_pre_open = utc(2026, 4, 6, 21, 0)  # 07:00 AEST Tuesday 7 April
    tuesday_open = utc(2026, 4, 7, 0, 0)  # 10:00 AEST

    assert at(sydney, thursday_open) == ("open", utc(2026, 4, 2, 5, 0))
    assert at(sydney, thursday_close) == ("closed", tuesday_pre_open)
    # Good Friday at what would be the open: closed all day.
    assert at(sydney, utc(2026, 4, 2, 23, 0)) == ("closed", tuesday_pre_open)
    # Easter Monday at 10:00 AEST: closed.
    assert at(sydney, utc(2026, 4, 6, 0, 0)) == ("closed", tuesday_pre_open)
    assert at(sydney, just_before(tuesday_pre_open)) == ("closed", tuesday_pre_open)
    assert at(sydney, tuesday_pre_open) == ("pre_open", tuesday_open)
    assert at(sydney, just_before(tuesday_open)) == ("pre_open", tuesday_open)
    assert at(sydney, tuesday_open) == ("open", utc(2026, 4, 7, 6, 0))


def test_sydney_across_the_spring_dst_change(sydney):
    # Clocks go forward on Sunday 4 October 2026 (AEST UTC+10 -> AEDT UTC+11).
    friday_open = utc(2026, 10, 2, 0, 0)  # 10:00 AEST
    monday_pre_open = utc(2026, 10, 4, 20, 0)  # 07:00 AEDT Monday 5 October
    monday_open = utc(2026, 10, 4, 23, 0)  # 10:00 AEDT
    assert at(sydney, just_before(friday_open)) == ("pre_open", friday_open)
    assert at(sydney, friday_open) == ("open", utc(2026, 10, 2, 6, 0))
    assert at(sydney, utc(2026, 10, 2, 6, 10)) == ("closed", monday_pre_open)
    assert at(sydney, utc(2026, 10, 4, 19, 59)) == ("closed", monday_pre_open)
    assert at(sydney, monday_pre_open) == ("pre_open", monday_open)
    assert at(sydney, monday_open) == ("open", utc(2026, 10, 5, 5, 0))


def test_an_early_close_ends_the_day_at_its_close_time(new_york):
    # Friday 27 November 2026 (EST): closes at 13:00 = 18:00 UTC, no closing auction.
    SpecialDay.objects.create(
        market=new_york,
        date=date(2026, 11, 27),
        name="Day after Thanksgiving",
        close_time=time(13, 0),
    )
    assert at(new_york, utc(2026, 11, 27, 14, 30)) == (
        "open",
        utc(2026, 11, 27, 18, 0),
    )
    assert at(new_york, just_before(utc(2026, 11, 27, 18, 0))) == (
        "open",
        utc(2026, 11, 27, 18, 0),
    )
    assert at(new_york, utc(2026, 11, 27, 18, 0)) == (
        "closed",
        utc(2026, 11, 30, 9, 0),  # Monday 04:00 EST
    )
    # The day before is a normal day.
    assert at(new_york, utc(2026, 11, 26, 20, 50)) == (
        "closing_auction",
        utc(2026, 11, 26, 21, 0),
    )


def test_a_special_day_can_have_its_own_timetable(new_york):
    # Christmas Eve 2026 (Thursday): open 09:30 to 12:00 only, no pre-open.
    eve = SpecialDay.objects.create(
        market=new_york, date=date(2026, 12, 24), name="Christmas Eve"
    )
    MarketSession.objects.create(
        market=new_york, special_day=eve, start=time(9, 30), state=S.OPEN
    )
    MarketSession.objects.create(
        market=new_york, special_day=eve, start=time(12, 0), state=S.CLOSED
    )
    Holiday.objects.create(market=new_york, date=date(2026, 12, 25), name="Christmas")
    assert at(new_york, utc(2026, 12, 24, 10, 0)) == (
        "closed",
        utc(2026, 12, 24, 14, 30),
    )
    assert at(new_york, utc(2026, 12, 24, 14, 30)) == (
        "open",
        utc(2026, 12, 24, 17, 0),
    )
    # Christmas Day is a holiday, then the weekend: next Monday's pre-open.
    assert at(new_york, utc(2026, 12, 24, 17, 0)) == (
        "closed",
        utc(2026, 12, 28, 9, 0),
    )


def test_a_day_starts_in_the_state_the_previous_business_day_ended_in(sydney):
    # An overnight pre-open from 20:00: Tuesday morning is still in pre-open, but
    # Monday morning (after a closed weekend) and Saturday are closed.
    market_timetable_set(
        market=sydney,
        entries=[
            (time(10, 0), S.OPEN),
            (time(16, 0), S.CLOSED),
            (time(20, 0), S.PRE_OPEN),
        ],
        acting_user=None,
    )
    # Tuesday 10 March 2026 03:00 AEDT = Monday 16:00 UTC.
    assert at(sydney, utc(2026, 3, 9, 16, 0)) == ("pre_open", utc(2026, 3, 9, 23, 0))
    # Monday 9 March 03:00 AEDT = Sunday 16:00 UTC.
    assert at(sydney, utc(2026, 3, 8, 16, 0)) == ("closed", utc(2026, 3, 8, 23, 0))
    # Friday 13 March 21:00 AEDT: pre-open until Saturday's midnight.
    assert at(sydney, utc(2026, 3, 13, 10, 0)) == ("pre_open", utc(2026, 3, 13, 13, 0))
    assert at(sydney, utc(2026, 3, 13, 13, 0)) == ("closed", utc(2026, 3, 15, 23, 0))


def test_wall_times_in_a_gap_and_an_overlap_on_business_days():
    # Cairo: clocks jump 00:00 -> 01:00 on Friday 24 April 2026 and fall back
    # 24:00 -> 23:00 on Thursday 29 October 2026.
    cairo = factories.market("XCA", timezone="Africa/Cairo")
    market_timetable_set(
        market=cairo,
        entries=[
            (time(0, 30), S.PRE_OPEN),
            (time(10, 0), S.OPEN),
            (time(14, 30), S.CLOSING_AUCTION),
            (time(23, 30), S.CLOSED),
        ],
        acting_user=None,
    )
    # The day starts at 01:00 EEST (22:00 UTC) in Thursday's final state; 00:30
    # does not exist and takes effect at 01:30 EEST (22:30 UTC).
    assert at(cairo, utc(2026, 4, 23, 22, 0)) == ("closed", utc(2026, 4, 23, 22, 30))
    assert at(cairo, utc(2026, 4, 23, 22, 30)) == ("pre_open", utc(2026, 4, 24, 7, 0))
    # 23:30 on 29 October happens twice: the first time (EEST, 20:30 UTC) counts.
    assert at(cairo, just_before(utc(2026, 10, 29, 20, 30))) == (
        "closing_auction",
        utc(2026, 10, 29, 20, 30),
    )
    assert at(cairo, utc(2026, 10, 29, 20, 30)) == ("closed", utc(2026, 10, 29, 22, 30))
    assert at(cairo, utc(2026, 10, 29, 22, 30)) == ("pre_open", utc(2026, 10, 30, 8, 0))


def test_a_market_without_a_timetable_is_scheduled_closed_for_good(market):
    assert at(market, utc(2026, 3, 9, 1, 0)) == ("closed", None)


def test_a_naive_instant_is_refused(new_york):
    with pytest.raises(ValueError):
        scheduled_state(new_york, datetime(2026, 3, 9, 12, 0))


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([(time(10, 0), "lunch")], "state"),
        ([(time(10, 0), S.HALTED)], "state"),
        ([(time(10, 0), S.OPEN), (time(10, 0), S.CLOSED)], "start"),
    ],
)
def test_a_bad_timetable_is_refused_and_changes_nothing(new_york, entries, field):
    before = list(MarketSession.objects.values_list("start", "state"))
    audits = AuditRecord.objects.count()
    with pytest.raises(RegistryError) as error:
        market_timetable_set(market=new_york, entries=entries, acting_user=None)
    assert error.value.field == field
    assert list(MarketSession.objects.values_list("start", "state")) == before
    assert AuditRecord.objects.count() == audits


# -- sessions_advance ------------------------------------------------------------------


@pytest.fixture
def published(monkeypatch) -> list:
    messages: list = []
    monkeypatch.setattr(services, "publish_on_commit", messages.extend)
    return messages


@pytest.fixture
def transitions():
    calls: list = []

    def hook(market, previous, new, now):
        calls.append((market.code, previous.code, new.code, now))

    market_transition_hook_register(hook)
    yield calls
    market_transition_hook_unregister(hook)


def schedule_audit(market: Market) -> list[tuple]:
    return list(
        AuditRecord.objects.filter(
            object_type="exchange.market", object_id=str(market.pk)
        )
        .exclude(action="market_timetable_set")
        .order_by("id")
        .values_list("actor_id", "action", "reason", "changes")
    )


def advance(now: datetime):
    with time_machine.travel(now, tick=False):
        return sessions_advance(now=now)


def test_the_schedule_moves_a_market_through_its_day(new_york, published, transitions):
    new_york.schedule_enabled = True
    new_york.save()
    steps = [
        (utc(2026, 3, 9, 7, 0), "closed"),  # 03:00 EDT
        (utc(2026, 3, 9, 8, 0), "pre_open"),
        (utc(2026, 3, 9, 13, 28), "opening_auction"),
        (utc(2026, 3, 9, 13, 30), "open"),
        (utc(2026, 3, 9, 19, 50), "closing_auction"),
        (utc(2026, 3, 9, 20, 0), "closed"),
    ]
    for now, state in steps:
        advance(now)
        new_york.refresh_from_db()
        assert new_york.state == state

    chain = [
        "open",
        "closed",
        "pre_open",
        "opening_auction",
        "open",
        "closing_auction",
        "closed",
    ]
    pairs = list(pairwise(chain))
    assert schedule_audit(new_york) == [
        (None, "market_schedule", "schedule", {"state": [a, b]}) for a, b in pairs
    ]
    assert [(m[0], m[1]["seq"], m[1]["data"]["state"]) for m in published] == [
        ("market.XNY", n, b) for n, (_, b) in enumerate(pairs, 1)
    ]
    assert published[3][1]["data"]["state_name"] == "Open"
    assert published[3][1]["data"]["trading_date"] == "2026-03-09"
    assert transitions == [
        ("XNY", a, b, now) for (a, b), (now, _) in zip(pairs, steps, strict=True)
    ]


def test_a_second_run_at_the_same_instant_changes_nothing(new_york, published):
    Market.objects.filter(pk=new_york.pk).update(schedule_enabled=True, state="closed")

    first = advance(utc(2026, 3, 9, 13, 30))
    second = advance(utc(2026, 3, 9, 13, 30))
    third = advance(utc(2026, 3, 9, 13, 31))

    assert first.transitions == [("XNY", "closed", "open")]
    assert (second.transitions, third.transitions) == ([], [])
    new_york.refresh_from_db()
    assert new_york.state == "open"
    assert schedule_audit(new_york) == [
        (None, "market_schedule", "schedule", {"state": ["closed", "open"]})
    ]
    assert [m[1]["seq"] for m in published] == [1]


def test_markets_not_following_a_schedule_are_left_alone(new_york, market, published):
    done = advance(utc(2026, 3, 7, 12, 0))  # Saturday: the timetable says closed
    new_york.refresh_from_db()
    assert (done.transitions, new_york.state) == ([], "open")
    assert published == []


def test_a_staff_halt_holds_over_the_schedule_and_resume_goes_to_the_scheduled_state(
    new_york, admin_user, published
):
    new_york.schedule_enabled = True
    new_york.save()
    advance(utc(2026, 3, 9, 13, 30))  # open
    with time_machine.travel(utc(2026, 3, 9, 14, 0), tick=False):
        market_set_state(
            market=new_york, action="halt", acting_user=admin_user, reason="News due"
        )
    for now in (
        utc(2026, 3, 9, 19, 50),
        utc(2026, 3, 9, 20, 0),
        utc(2026, 3, 10, 14, 0),
    ):
        assert advance(now).transitions == []
    new_york.refresh_from_db()
    assert (new_york.state, new_york.state_reason) == ("halted", "News due")

    # Resumed on Tuesday 10 March at 15:55 EDT: the closing auction is on.
    with time_machine.travel(utc(2026, 3, 10, 19, 55), tick=False):
        market_set_state(market=new_york, action="resume", acting_user=admin_user)
    new_york.refresh_from_db()
    assert (new_york.state, new_york.state_reason) == ("closing_auction", "")
    assert schedule_audit(new_york)[-2:] == [
        (admin_user.pk, "market_halt", "News due", {"state": ["open", "halted"]}),
        (admin_user.pk, "market_resume", "", {"state": ["halted", "closing_auction"]}),
    ]
    assert advance(utc(2026, 3, 10, 20, 0)).transitions == [
        ("XNY", "closing_auction", "closed")
    ]


def test_resume_without_a_schedule_opens_the_market(market, admin_user):
    market_set_state(market=market, action="halt", acting_user=admin_user, reason="x")
    market_set_state(market=market, action="resume", acting_user=admin_user)
    market.refresh_from_db()
    assert market.state == "open"


def test_the_schedule_ends_circuit_breaker_halts_that_have_run_out(
    market, symbol, published
):
    other = factories.symbol(market, "XS02")
    factories.symbol(market, "XS03")
    symbol_circuit_break(symbol=symbol, until=utc(2026, 3, 9, 0, 5), reason="band")
    symbol_circuit_break(symbol=other, until=utc(2026, 3, 9, 0, 6), reason="band")
    published.clear()

    done = advance(utc(2026, 3, 9, 0, 5))

    assert done.resumed == ["XSX:XS01"]
    states = dict(Symbol.objects.values_list("code", "trading_state"))
    assert states == {"XS01": "", "XS02": "halted", "XS03": ""}
    symbol.refresh_from_db()
    assert (symbol.state_reason, symbol.halted_until) == ("", None)
    record = AuditRecord.objects.filter(object_type="exchange.symbol").latest("id")
    assert (record.actor_id, record.action, record.reason, record.changes) == (
        None,
        "symbol_resume",
        "cooling-off ended",
        {"trading_state": ["halted", ""]},
    )
    ((topic, message),) = published
    assert topic == "market.XSX"
    assert message["data"]["symbol_states"] == [
        {
            "symbol": "XSX:XS02",
            "state": "halted",
            "reason": "band",
            "halted_until": "2026-03-09T00:06:00+00:00",
        }
    ]
    assert advance(utc(2026, 3, 9, 0, 5)).resumed == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_schedule_runs_make_each_transition_once(new_york):
    Market.objects.filter(pk=new_york.pk).update(schedule_enabled=True, state="closed")
    now = utc(2026, 3, 9, 8, 0)
    barrier = threading.Barrier(2)
    results: list = []

    def run() -> None:
        try:
            barrier.wait(5)
            results.append(sessions_advance(now=now).transitions)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert sorted(results) == [[], [("XNY", "closed", "pre_open")]]
    assert schedule_audit(new_york) == [
        (None, "market_schedule", "schedule", {"state": ["closed", "pre_open"]})
    ]


def test_the_beat_schedule_runs_the_task_every_five_seconds(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sessions-advance"]
    assert (entry["task"], entry["schedule"]) == (
        "exchange.tasks.sessions_advance_task",
        5.0,
    )


def test_the_task_calls_the_service(new_york):
    from exchange.tasks import sessions_advance_task

    Market.objects.filter(pk=new_york.pk).update(schedule_enabled=True)
    with time_machine.travel(utc(2026, 3, 7, 12, 0), tick=False):
        assert sessions_advance_task() == 1
        assert sessions_advance_task() == 0
    new_york.refresh_from_db()
    assert new_york.state == "closed"
