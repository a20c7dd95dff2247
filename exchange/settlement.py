"""Settlement: moving trades' unsettled cash and holdings to available when due.

On a market with ``settlement_days`` = n > 0, a trade credits the seller's proceeds
(value - seller fee) to the seller's ``unsettled`` cash and the bought quantity to
the buyer's ``unsettled`` holding (the buyer's cash and the seller's securities
leave ``held`` at the trade, and fees are posted at the trade). Its
``settlement_date`` is n business days (``exchange.calendar``: weekends and the
market's holidays) after the trade's date in the market's timezone. On a T+0
market (n = 0) a trade settles at once: ``settled_at`` = ``executed_at``.

``settlement_run`` settles every trade whose date has come (in its market's
timezone, or ``as_of``): one journal entry of kind ``settle``, reference
``trade:<id>``, moves the buyer's quantity from ``unsettled`` to ``available`` and
the seller's cash likewise, and sets ``Trade.settled_at``.

The seller's cash moved is exactly the proceeds, unless the account trades its
unsettled proceeds (``Account.trade_unsettled_proceeds``) and has spent some of its
unsettled cash on buys. Spending consumes the proceeds that settle first: after a
trade settles, the account's unsettled cash in that currency is
``min(unsettled now, proceeds of its other trades still pending)`` and the
difference moves to available. That difference is never negative and never more
than the trade's proceeds (order entry and the matching worker keep an account's
unsettled cash at most its pending proceeds), and the result of settling a set of
trades does not depend on the order they are settled in.

Exactly once: each trade is settled in its own transaction that first locks the
trade row (``FOR UPDATE SKIP LOCKED``, still unsettled), then the balances in
(account, asset) order; a concurrent run skips a trade being settled, and a trade
already settled no longer matches. Unsettled holdings cannot be sold until they
settle (a sell's hold draws on ``available`` only).
"""

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from exchange.calendar import local_date
from exchange.models import Market, Trade
from exchange.streams import publish_on_commit
from oms.publish import private_messages
from registry.ledger import LedgerBatch, LedgerError, Line
from registry.models import Bucket, JournalEntry
from registry.services import User, audit_record

logger = logging.getLogger(__name__)


def trades_pending_settlement() -> QuerySet[Trade]:
    """Trades whose unsettled cash and holdings have not moved to available.

    The one definition used for both the due trades and an account's pending
    proceeds. A busted trade's unsettled amounts were reversed by the bust: it is
    never settled.
    """
    return Trade.objects.filter(settled_at__isnull=True, busted_at__isnull=True)


def unsettled_proceeds_pending(
    *, account_id: int, asset_id: int, exclude_ids: Collection[int] = ()
) -> Decimal:
    """The sale proceeds (value - seller fee) in currency ``asset_id`` of the
    account's trades pending settlement, leaving out ``exclude_ids``."""
    trades = trades_pending_settlement().filter(
        seller_id=account_id, symbol__currency_id=asset_id
    )
    if exclude_ids:
        trades = trades.exclude(pk__in=list(exclude_ids))
    total = trades.aggregate(total=Sum(F("value") - F("seller_fee")))["total"]
    return total or Decimal(0)


def trades_due(
    *,
    as_of: date | None = None,
    market_ids: Collection[int] | None = None,
    trade_ids: Collection[int] | None = None,
) -> list[int]:
    """Ids of the trades pending settlement whose settlement date is on or before
    ``as_of`` (default: today in each market's timezone), earliest first."""
    markets = Market.objects.order_by("pk")
    if market_ids is not None:
        markets = markets.filter(pk__in=list(market_ids))
    now = timezone.now()
    due = Q()
    for market in markets:
        day = as_of or local_date(market, now)
        due |= Q(symbol__market_id=market.pk, settlement_date__lte=day)
    if not due:
        return []
    trades = trades_pending_settlement().filter(due)
    if trade_ids is not None:
        trades = trades.filter(pk__in=list(trade_ids))
    return list(trades.order_by("settlement_date", "id").values_list("pk", flat=True))


@dataclass
class SettlementResult:
    """What a run did: trades it settled, and trades it could not (logged)."""

    settled: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def settlement_run(
    *,
    as_of: date | None = None,
    acting_user: User = None,
    market_ids: Collection[int] | None = None,
    trade_ids: Collection[int] | None = None,
) -> SettlementResult:
    """Settle every due trade (optionally only of ``market_ids`` / ``trade_ids``),
    each exactly once, each in its own transaction (see the module docstring).

    Idempotent and safe to run concurrently: a trade settled or being settled by
    another run is skipped. A trade whose postings the ledger refuses (a bucket
    would go negative) is logged, left unsettled and reported in ``failed``.
    With an ``acting_user`` (staff in the admin) the journal entries name them and
    one audit record per market summarises the run.

    Side effects on commit of each trade: the changed balances and holdings are
    published on the owners' ``balances`` and ``holdings`` streams.
    """
    result = SettlementResult()
    user_id = acting_user.pk if acting_user and acting_user.is_authenticated else None
    by_market: dict[int, list[int]] = {}
    for trade_id in trades_due(as_of=as_of, market_ids=market_ids, trade_ids=trade_ids):
        try:
            trade = _settle(trade_id, acting_user_id=user_id)
        except LedgerError:
            logger.exception("trade %s could not be settled", trade_id)
            result.failed.append(trade_id)
            continue
        if trade is not None:
            result.settled.append(trade.pk)
            by_market.setdefault(trade.symbol.market_id, []).append(trade.pk)
    if user_id is not None:
        _audit(acting_user, as_of, market_ids, by_market)
    if result.settled:
        logger.info("settled %d trades", len(result.settled))
    return result


def _settle(trade_id: int, *, acting_user_id: int | None) -> Trade | None:
    """Settle one trade; ``None`` if another run has it or has settled it."""
    with transaction.atomic(durable=True):
        trade = (
            trades_pending_settlement()
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("symbol__currency", "symbol__asset")
            .filter(pk=trade_id)
            .first()
        )
        if trade is None:
            return None
        symbol = trade.symbol
        cash = (trade.seller_id, symbol.currency_id)
        holding = (trade.buyer_id, symbol.asset_id)
        ledger = LedgerBatch([cash, holding])
        pending_after = unsettled_proceeds_pending(
            account_id=trade.seller_id,
            asset_id=symbol.currency_id,
            exclude_ids=[trade.pk],
        )
        unsettled = ledger.balance(*cash).unsettled
        proceeds = trade.value - trade.seller_fee
        cash_moved = min(proceeds, max(Decimal(0), unsettled - pending_after))
        ledger.post(
            kind=JournalEntry.Kind.SETTLE,
            lines=[
                Line(*cash, Bucket.UNSETTLED, -cash_moved),
                Line(*cash, Bucket.AVAILABLE, cash_moved),
                Line(*holding, Bucket.UNSETTLED, -trade.quantity),
                Line(*holding, Bucket.AVAILABLE, trade.quantity),
            ],
            reference=f"trade:{trade.pk}",
            reason=f"Settlement due {trade.settlement_date.isoformat()}",
            acting_user_id=acting_user_id,
        )
        ledger.flush()
        trade.settled_at = timezone.now()
        trade.save(update_fields=["settled_at"])
        publish_on_commit(
            private_messages(orders=[], balances=list(ledger.balances.values()))
        )
    return trade


def _audit(
    acting_user: User,
    as_of: date | None,
    market_ids: Collection[int] | None,
    by_market: dict[int, list[int]],
) -> None:
    markets = Market.objects.order_by("pk")
    if market_ids is not None:
        markets = markets.filter(pk__in=list(market_ids))
    else:
        markets = markets.filter(pk__in=list(by_market))
    with transaction.atomic():
        for market in markets:
            settled = by_market.get(market.pk, [])
            audit_record(
                actor=acting_user,
                action="settlement_run",
                target=market,
                changes={
                    "as_of": as_of.isoformat() if as_of else None,
                    "settled": len(settled),
                    "trades": settled[:1000],
                },
            )
