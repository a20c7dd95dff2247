"""Invariant checks over the stored book, for tests that race matching workers."""

from django.db.models import Max, Min

from exchange.models import Symbol
from oms.models import RESTING_STATUSES, Order


def crossed_books() -> dict[str, tuple[object, object]]:
    """Symbols (``MARKET:CODE``) not in auction whose stored book is crossed: the
    best resting buy is at or above the best resting sell."""
    crossed = {}
    for symbol in Symbol.objects.filter(book_in_auction=False).select_related("market"):
        resting = Order.objects.filter(
            symbol=symbol, status__in=RESTING_STATUSES, price__isnull=False
        )
        best_buy = resting.filter(side=Order.Side.BUY).aggregate(p=Max("price"))["p"]
        best_sell = resting.filter(side=Order.Side.SELL).aggregate(p=Min("price"))["p"]
        if best_buy is not None and best_sell is not None and best_buy >= best_sell:
            crossed[f"{symbol.market.code}:{symbol.code}"] = (best_buy, best_sell)
    return crossed


def assert_book_not_crossed() -> None:
    """The persisted book of every symbol outside an auction is uncrossed."""
    assert crossed_books() == {}
