"""The auction equilibrium price (exchange.engine.auction.equilibrium).

Each hand-computed example writes its volume table in the comments:
``buy>=`` is the bid volume at or above the price, ``sell<=`` the ask volume at
or below it, ``exec`` the executable volume (their minimum) and ``surplus`` the
absolute difference.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.engine.auction import Equilibrium, equilibrium
from exchange.engine.types import Side


def test_the_price_with_the_most_executable_volume_wins() -> None:
    # price  buy>=  sell<=  exec  surplus
    #   99     20      4      4     16
    #  100     20     10     10     10
    #  101     15     18     15      3   <- most volume
    #  102      5     18      5     13
    #  103      0     23      0     23
    bids = [(102, 5), (101, 10), (100, 5)]
    asks = [(99, 4), (100, 6), (101, 8), (103, 5)]
    assert equilibrium(bids, asks) == Equilibrium(101, 15, 3, Side.SELL)


def test_a_volume_tie_is_broken_by_the_smallest_surplus() -> None:
    # price  buy>=  sell<=  exec  surplus
    #  100     15     10     10      5
    #  101     10     10     10      0   <- same volume, smaller surplus
    # (the lowest price, rule 4, would have been 100; a reference at 100,
    # rule 3, would have been 100 too: surplus comes first.)
    bids = [(100, 5), (101, 10)]
    asks = [(100, 10)]
    assert equilibrium(bids, asks) == Equilibrium(101, 10, 0, None)
    assert equilibrium(bids, asks, reference=100) == Equilibrium(101, 10, 0, None)


def test_a_surplus_tie_is_broken_by_the_distance_to_the_reference() -> None:
    # price  buy>=  sell<=  exec  surplus
    #   95     13      0      0     13
    #  100     10     10     10      0   <- tie
    #  104     10     10     10      0   <- tie
    #  108      0     13      0     13
    bids = [(104, 10), (95, 3)]
    asks = [(100, 10), (108, 3)]
    assert equilibrium(bids, asks, reference=103) == Equilibrium(104, 10, 0, None)
    assert equilibrium(bids, asks, reference=1000) == Equilibrium(104, 10, 0, None)
    assert equilibrium(bids, asks, reference=101) == Equilibrium(100, 10, 0, None)
    assert equilibrium(bids, asks, reference=1) == Equilibrium(100, 10, 0, None)


def test_a_remaining_tie_is_broken_by_the_lowest_price() -> None:
    # Same table as above.  No reference: the lowest of 100 and 104.
    bids = [(104, 10), (95, 3)]
    asks = [(100, 10), (108, 3)]
    assert equilibrium(bids, asks) == Equilibrium(100, 10, 0, None)
    # A reference equally far from both (102: 2 ticks each) leaves the tie to
    # rule 4 as well.
    assert equilibrium(bids, asks, reference=102) == Equilibrium(100, 10, 0, None)


def test_a_reference_between_candidates_picks_the_closest_candidate() -> None:
    # Only prices present on the book are candidates, never the reference.
    # price  buy>=  sell<=  exec  surplus
    #   90      5      5      5      0
    #  110      5      5      5      0
    bids = [(110, 5)]
    asks = [(90, 5)]
    assert equilibrium(bids, asks, reference=100) == Equilibrium(90, 5, 0, None)
    assert equilibrium(bids, asks, reference=101) == Equilibrium(110, 5, 0, None)


def test_no_cross_means_no_equilibrium() -> None:
    # price  buy>=  sell<=  exec
    #   99     10      0      0
    #  100      0      7      0
    assert equilibrium([(99, 10)], [(100, 7)]) is None
    assert equilibrium([(99, 10)], [(100, 7)], reference=99) is None


def test_an_empty_side_means_no_equilibrium() -> None:
    assert equilibrium([], []) is None
    assert equilibrium([(100, 5)], []) is None
    assert equilibrium([], [(100, 5)]) is None


def test_a_single_price() -> None:
    # price  buy>=  sell<=  exec  surplus
    #  100      7      3      3      4 (buy)
    assert equilibrium([(100, 7)], [(100, 3)]) == Equilibrium(100, 3, 4, Side.BUY)
    assert equilibrium([(100, 3)], [(100, 7)]) == Equilibrium(100, 3, 4, Side.SELL)


def test_entries_sharing_a_price_add_up() -> None:
    # price  buy>=  sell<=  exec  surplus
    #  100      7      7      7      0
    bids = [(100, 3), (100, 4)]
    asks = [(100, 2), (100, 5)]
    assert equilibrium(bids, asks) == Equilibrium(100, 7, 0, None)


def test_market_like_extreme_prices() -> None:
    # A market buy entered at a huge limit, a market sell at 1 tick.
    #      price  buy>=  sell<=  exec  surplus
    #          1     10      4      4      6
    #        100     10      4      4      6
    #        101      5     14      5      9   <- tie on volume and surplus,
    # 1000000000      5     14      5      9   <- the lowest wins
    top = 1_000_000_000
    bids = [(top, 5), (100, 5)]
    asks = [(1, 4), (101, 10)]
    assert equilibrium(bids, asks) == Equilibrium(101, 5, 9, Side.SELL)
    assert equilibrium(bids, asks, reference=100) == Equilibrium(101, 5, 9, Side.SELL)
    # Only market-like orders: both extremes tie on everything.
    #      price  buy>=  sell<=  exec  surplus
    #          1      5      5      5      0
    # 1000000000      5      5      5      0
    assert equilibrium([(top, 5)], [(1, 5)]) == Equilibrium(1, 5, 0, None)
    assert equilibrium([(top, 5)], [(1, 5)], reference=top - 10) == Equilibrium(
        top, 5, 0, None
    )


def test_zero_quantities_are_ignored_and_negative_ones_refused() -> None:
    # The zero entry at 105 is no candidate: with it, 105 would be the price
    # closest to the reference; without, 100 and 110 are equally close.
    assert equilibrium([(105, 0), (110, 5)], [(100, 5)], reference=105) == (
        Equilibrium(100, 5, 0, None)
    )
    assert equilibrium([(105, 0)], [(100, 5)]) is None
    with pytest.raises(ValueError, match="negative quantity"):
        equilibrium([(100, -1)], [(100, 5)])


def test_the_input_order_does_not_matter() -> None:
    bids = [(102, 5), (101, 10), (100, 5), (101, 1)]
    asks = [(99, 4), (100, 6), (101, 8), (103, 5)]
    expected = equilibrium(bids, asks)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(bids)
        rng.shuffle(asks)
        assert equilibrium(iter(bids), iter(asks)) == expected


# --------------------------------------------------------------------------
# Against a brute force
# --------------------------------------------------------------------------


def brute_force(
    bids: list[tuple[int, int]],
    asks: list[tuple[int, int]],
    reference: int | None,
) -> Equilibrium | None:
    """Every candidate price, volumes summed from scratch, the rules in turn."""
    candidates = sorted({p for p, q in bids if q} | {p for p, q in asks if q})
    table = []
    for price in candidates:
        buy = sum(q for p, q in bids if p >= price)
        sell = sum(q for p, q in asks if p <= price)
        table.append((price, min(buy, sell), abs(buy - sell), buy, sell))
    if not table or max(row[1] for row in table) == 0:
        return None
    # Filter rule by rule, as the contract reads.
    most = max(row[1] for row in table)
    table = [row for row in table if row[1] == most]
    least = min(row[2] for row in table)
    table = [row for row in table if row[2] == least]
    if reference is not None:
        closest = min(abs(row[0] - reference) for row in table)
        table = [row for row in table if abs(row[0] - reference) == closest]
    price, matched, surplus, buy, sell = min(table)
    side = Side.BUY if buy > sell else Side.SELL if sell > buy else None
    return Equilibrium(price, matched, surplus, side)


entries = st.lists(st.tuples(st.integers(1, 30), st.integers(0, 20)), max_size=12)


@settings(max_examples=500, deadline=None)
@given(
    bids=entries,
    asks=entries,
    reference=st.none() | st.integers(1, 32),
)
def test_equilibrium_matches_a_brute_force(
    bids: list[tuple[int, int]],
    asks: list[tuple[int, int]],
    reference: int | None,
) -> None:
    found = equilibrium(bids, asks, reference)
    assert found == brute_force(bids, asks, reference)
    if found is not None:
        # No price at all, candidate or not, executes more.
        for price in range(0, 33):
            buy = sum(q for p, q in bids if p >= price)
            sell = sum(q for p, q in asks if p <= price)
            assert min(buy, sell) <= found.matched
