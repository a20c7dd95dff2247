from datetime import date

import pytest

from exchange.calendar import business_days_add, trading_day_check
from exchange.models import Holiday

pytestmark = pytest.mark.django_db


def test_business_days_skip_weekend_and_holiday(market):
    # Thursday 2026-12-24; Friday 25th is a holiday; 26/27 a weekend.
    Holiday.objects.create(market=market, date=date(2026, 12, 25), name="Christmas")
    assert business_days_add(market, date(2026, 12, 24), 0) == date(2026, 12, 24)
    assert business_days_add(market, date(2026, 12, 24), 1) == date(2026, 12, 28)
    assert business_days_add(market, date(2026, 12, 24), 2) == date(2026, 12, 29)
    # From a non-business day, T+0 is the next business day.
    assert business_days_add(market, date(2026, 12, 26), 0) == date(2026, 12, 28)
    assert trading_day_check(market, date(2026, 12, 25)) is False
    assert trading_day_check(market, date(2026, 12, 27)) is False
    assert trading_day_check(market, date(2026, 12, 28)) is True


def test_negative_days_refused(market):
    with pytest.raises(ValueError):
        business_days_add(market, date(2026, 12, 24), -1)
