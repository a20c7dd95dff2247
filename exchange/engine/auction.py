"""The auction equilibrium (uncross) price.

Pure Python, no I/O.  Prices are integer ticks and quantities integer lots, as
everywhere in the engine.  The rules are those of ``docs/engine.md``
("Equilibrium price"): among the prices present on either side, choose the one
that

1. maximises the executable volume ``min(buy volume at >= p, sell volume at <= p)``,
2. then minimises the surplus ``|buy volume at >= p - sell volume at <= p|``,
3. then is closest to ``reference`` (when one is given),
4. then is the lowest.

No executable volume at any price means no equilibrium (``None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from exchange.engine.types import Side

__all__ = ["Equilibrium", "equilibrium"]


@dataclass(frozen=True, slots=True)
class Equilibrium:
    """The outcome of an uncross at ``price``.

    ``matched`` lots trade; ``surplus`` is ``|buy volume - sell volume|`` at the
    price (buy volume: bids at or above it, sell volume: asks at or below it),
    left on ``surplus_side`` (the side with more volume; ``None`` when equal).
    """

    price: int
    matched: int
    surplus: int
    surplus_side: Side | None


def _aggregate(entries: Iterable[tuple[int, int]], volume: dict[int, int]) -> None:
    for price, quantity in entries:
        if quantity < 0:
            raise ValueError(f"negative quantity {quantity} at price {price}")
        if quantity:
            volume[price] = volume.get(price, 0) + quantity


def equilibrium(
    bids: Iterable[tuple[int, int]],
    asks: Iterable[tuple[int, int]],
    reference: int | None = None,
) -> Equilibrium | None:
    """The equilibrium of ``bids`` and ``asks`` or ``None`` if nothing can trade.

    ``bids`` and ``asks`` are ``(price_ticks, quantity_lots)`` entries in any
    order; several entries may share a price (they add up).  Entries with a
    zero quantity are ignored (their price is no candidate); a negative quantity
    raises ``ValueError``.  ``reference`` (ticks), when given, breaks ties that
    remain after volume and surplus: the closest price wins, and if two are
    equally close the lower one.  O(n log n) in the number of entries.
    """
    buy_at: dict[int, int] = {}
    sell_at: dict[int, int] = {}
    _aggregate(bids, buy_at)
    _aggregate(asks, sell_at)
    if not buy_at or not sell_at:
        return None

    prices = sorted(buy_at.keys() | sell_at.keys())
    # Sell volume at <= p: running sum from the lowest price up.
    sell_cumulative: list[int] = []
    running = 0
    for price in prices:
        running += sell_at.get(price, 0)
        sell_cumulative.append(running)

    best: tuple[int, int, int, int] | None = None  # (-matched, surplus, dist, price)
    best_volumes = (0, 0)
    # Buy volume at >= p: running sum from the highest price down.
    running = 0
    for i in range(len(prices) - 1, -1, -1):
        price = prices[i]
        running += buy_at.get(price, 0)
        buy_volume = running
        sell_volume = sell_cumulative[i]
        matched = min(buy_volume, sell_volume)
        if not matched:
            continue
        distance = 0 if reference is None else abs(price - reference)
        key = (-matched, abs(buy_volume - sell_volume), distance, price)
        if best is None or key < best:
            best = key
            best_volumes = (buy_volume, sell_volume)

    if best is None:
        return None
    buy_volume, sell_volume = best_volumes
    if buy_volume > sell_volume:
        side: Side | None = Side.BUY
    elif sell_volume > buy_volume:
        side = Side.SELL
    else:
        side = None
    return Equilibrium(
        price=best[3],
        matched=-best[0],
        surplus=best[1],
        surplus_side=side,
    )
