"""A market's business-day calendar: weekends and its holidays, in its own timezone.

Trading sessions (which state a market is in at an instant) build on this; so do
settlement dates (T+n business days).
"""

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from exchange.models import Holiday, Market

#: Monday=0 .. Sunday=6; markets trade Monday to Friday.
WEEKEND = frozenset({5, 6})


def holidays_between(market: Market, start: date, end: date) -> frozenset[date]:
    """The market's holiday dates in [start, end]."""
    return frozenset(
        Holiday.objects.filter(
            market=market, date__gte=start, date__lte=end
        ).values_list("date", flat=True)
    )


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
