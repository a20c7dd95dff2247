"""A market's business-day calendar and session timetable, in its own timezone.

Business days are Monday to Friday except the market's ``Holiday`` rows. On each
business day the market follows its session timetable (``MarketSession`` rows:
from a local wall time, a trading state), or a ``SpecialDay``'s early close or
alternative timetable; weekends and holidays are closed all day. Settlement dates
(T+n business days) build on the same calendar.

Wall times are local: "10:00" in America/New_York is 15:00 UTC in winter and 14:00
UTC in summer. A wall time that does not exist on a day (inside a spring-forward
gap) is read with the UTC offset from before the jump, so it takes effect as much
later as the clocks jumped (00:30 in a 00:00 -> 01:00 gap takes effect at 01:30);
one that occurs twice (a fall-back overlap) takes effect at its first occurrence.
A day starts at its first instant (01:00 when midnight is skipped).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from exchange.models import Holiday, Market, MarketSession, SpecialDay

#: Monday=0 .. Sunday=6; markets trade Monday to Friday.
WEEKEND = frozenset({5, 6})


def holidays_between(market: Market, start: date, end: date) -> frozenset[date]:
    """The market's holiday dates in [start, end]."""
    return frozenset(
        Holiday.objects.filter(
            market=market, date__gte=start, date__lte=end
        ).values_list("date", flat=True)
    )


def is_holiday(market: Market, day: date) -> bool:
    """Is ``day`` (a date in the market's timezone) one of its holidays?"""
    return Holiday.objects.filter(market=market, date=day).exists()


def is_business_day(day: date, holidays: Iterable[date] = ()) -> bool:
    return day.weekday() not in WEEKEND and day not in set(holidays)


def trading_day_check(market: Market, day: date) -> bool:
    """Is ``day`` (a date in the market's timezone) a business day of the market?"""
    return is_business_day(day, holidays_between(market, day, day))


def business_days_add(market: Market, start: date, days: int) -> date:
    """The date ``days`` business days after ``start`` (``days`` = 0: ``start``
    itself if it is a business day, else the next business day)."""
    if days < 0:
        raise ValueError("days must be >= 0")
    # Weekends and holidays together never span more than a few days per business
    # day; fetch a generous window once.
    holidays = holidays_between(market, start, start + timedelta(days=days * 3 + 30))
    day = start
    while not is_business_day(day, holidays):
        day += timedelta(days=1)
    remaining = days
    while remaining:
        day += timedelta(days=1)
        if is_business_day(day, holidays):
            remaining -= 1
    return day


def local_date(market: Market, instant: datetime) -> date:
    """The calendar date in the market's timezone at ``instant`` (aware)."""
    return instant.astimezone(market.tzinfo).date()


# -- sessions -----------------------------------------------------------------------

#: How far ahead ``scheduled_state`` looks for the next change before giving up
#: (a timetable that never changes state, e.g. an empty one).
SCHEDULE_HORIZON_DAYS = 400
_WINDOW_DAYS = 14


@dataclass(frozen=True, slots=True)
class _Calendar:
    """A market's timetables and calendar rows for a range of dates (4 queries)."""

    regular: list[tuple[time, str]]
    special_days: dict[date, SpecialDay]
    special_sessions: dict[int, list[tuple[time, str]]]
    holidays: frozenset[date]

    @classmethod
    def load(cls, market: Market, first: date, last: date) -> "_Calendar":
        regular = list(
            MarketSession.objects.filter(
                market=market, special_day__isnull=True
            ).values_list("start", "state")
        )
        special_days = {
            day.date: day
            for day in SpecialDay.objects.filter(
                market=market, date__gte=first, date__lte=last
            )
        }
        special_sessions: dict[int, list[tuple[time, str]]] = {}
        for day_id, start, state in MarketSession.objects.filter(
            special_day__in=list(special_days.values())
        ).values_list("special_day_id", "start", "state"):
            special_sessions.setdefault(day_id, []).append((start, state))
        return cls(
            regular=sorted(regular),
            special_days=special_days,
            special_sessions={k: sorted(v) for k, v in special_sessions.items()},
            holidays=holidays_between(market, first, last),
        )

    def entries(self, day: date) -> list[tuple[time, str]]:
        """The day's timetable as (local start, state), by start; empty on a
        weekend or holiday (closed all day)."""
        if not is_business_day(day, self.holidays):
            return []
        special = self.special_days.get(day)
        if special is None:
            return self.regular
        entries = self.special_sessions.get(special.pk, self.regular)
        if special.close_time is not None:
            entries = [entry for entry in entries if entry[0] < special.close_time]
            entries.append((special.close_time, Market.State.CLOSED))
        return entries


def _instant(day: date, wall: time, market: Market) -> datetime:
    """The UTC instant of local wall time ``wall`` on ``day`` (see the module
    docstring for gaps and overlaps)."""
    # fold=0: a wall time inside a gap takes the offset from before the jump (so it
    # lands after the jump); one inside an overlap is its first occurrence.
    return datetime.combine(day, wall, tzinfo=market.tzinfo).astimezone(UTC)


def session_timeline(
    market: Market, first: date, last: date
) -> list[tuple[datetime, str]]:
    """The scheduled state changes from local midnight of ``first`` to the end of
    ``last``: (UTC instant, state) by instant, starting with the state at midnight
    of ``first``. A business day starts in the state its previous day ended in
    when that was a business day with a timetable, else closed; a weekend or
    holiday is closed all day."""
    calendar = _Calendar.load(market, first - timedelta(days=1), last)
    timeline: list[tuple[datetime, str]] = []
    previous_entries = calendar.entries(first - timedelta(days=1))
    day = first
    while day <= last:
        entries = calendar.entries(day)
        if entries and previous_entries:
            carried = previous_entries[-1][1]
        else:
            carried = Market.State.CLOSED
        timeline.append((_instant(day, time(0), market), carried))
        changes = sorted(
            (_instant(day, start, market), state) for start, state in entries
        )
        timeline.extend(changes)
        previous_entries = entries
        day += timedelta(days=1)
    return timeline


def scheduled_state(market: Market, at: datetime) -> tuple[str, datetime | None]:
    """The state the market's timetable gives at ``at`` (aware), and the instant
    (UTC) of the next scheduled change of state, or None if none comes within
    ``SCHEDULE_HORIZON_DAYS``. Ignores ``schedule_enabled`` and staff halts."""
    if at.tzinfo is None:
        raise ValueError("at must be an aware datetime")
    if not MarketSession.objects.filter(market=market).exists():
        return Market.State.CLOSED, None  # no timetable: closed every day
    today = local_date(market, at)
    timeline = session_timeline(market, today, today + timedelta(days=_WINDOW_DAYS))
    current = next(state for instant, state in reversed(timeline) if instant <= at)
    searched = _WINDOW_DAYS
    while True:
        for instant, state in timeline:
            if instant > at and state != current:
                return current, instant
        if searched >= SCHEDULE_HORIZON_DAYS:
            return current, None
        start = today + timedelta(days=searched + 1)
        searched += _WINDOW_DAYS
        timeline = session_timeline(market, start, today + timedelta(days=searched))
