"""Registry reads: reconciliation of stored balances against the ledger, and
positions and running balances of an account at any past instant."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import groupby
from typing import Any

from django.db.models import QuerySet, Sum

from registry.models import Account, Asset, Balance, Bucket, Posting


@dataclass(frozen=True, slots=True)
class Difference:
    """A stored figure that disagrees with the ledger (or an unbalanced asset)."""

    account: str
    asset: str
    bucket: str
    stored: Decimal
    ledger: Decimal

    def __str__(self) -> str:
        return (
            f"{self.account} {self.asset} {self.bucket}: stored {self.stored}, "
            f"ledger {self.ledger}"
        )


def posting_sums(
    *group_by: str, field: str = "amount", postings: QuerySet[Posting] | None = None
) -> dict[tuple[Any, ...], Decimal]:
    """Sum of posting ``field`` (``amount`` or ``cost_delta``) grouped by
    ``group_by`` fields, exactly, over ``postings`` (default: the whole ledger).

    PostgreSQL sums NUMERIC exactly (every profile runs on PostgreSQL).
    """
    queryset = Posting.objects.all() if postings is None else postings
    rows = queryset.values(*group_by).annotate(total=Sum(field)).order_by()
    return {tuple(row[f] for f in group_by): row["total"] for row in rows}


def ledger_differences() -> list[Difference]:
    """Every asset whose postings do not sum to zero, every balance bucket that
    differs from the sum of its postings, and every cost base that differs from the
    sum of its postings' cost changes. Empty when the registry is consistent."""
    differences = [
        Difference("*", asset_code, "sum", Decimal(0), total)
        for (asset_code,), total in sorted(posting_sums("asset__code").items())
        if total != 0
    ]
    sums = posting_sums("account_id", "asset_id", "bucket")
    costs = posting_sums("account_id", "asset_id", field="cost_delta")
    for balance in Balance.objects.select_related("account", "asset").order_by("pk"):
        key = (balance.account_id, balance.asset_id)
        figures = [
            (bucket, getattr(balance, bucket), sums.get((*key, bucket), Decimal(0)))
            for bucket in ("available", "held", "unsettled")
        ]
        figures.append(("cost", balance.cost, costs.get(key, Decimal(0))))
        for name, stored, ledger in figures:
            if stored != ledger:
                differences.append(
                    Difference(
                        balance.account.number, balance.asset.code, name, stored, ledger
                    )
                )
    return differences


# Point in time ---------------------------------------------------------------------


def positions_as_at(
    *,
    account: Account,
    as_at: datetime | None = None,
    before: datetime | None = None,
    asset_kind: str | None = None,
) -> list[Balance]:
    """The account's positions derived from its postings, one per asset it has
    postings in, ordered by asset code: unsaved ``Balance`` objects (asset loaded)
    whose buckets and cost base are the sums of the postings of journal entries
    created at or before ``as_at`` (or strictly before ``before``); every posting
    when both are None. ``asset_kind`` narrows to currencies or securities.
    """
    postings = account_postings(
        account=account, as_at=as_at, before=before, asset_kind=asset_kind
    )
    amounts = posting_sums("asset_id", "bucket", postings=postings)
    costs = posting_sums("asset_id", field="cost_delta", postings=postings)
    asset_ids = {asset_id for asset_id, _ in amounts} | {a for (a,) in costs}
    assets = Asset.objects.in_bulk(asset_ids)
    positions = []
    for asset_id in asset_ids:
        position = Balance(
            account=account,
            asset=assets[asset_id],
            cost=costs.get((asset_id,), Decimal(0)),
            allow_negative=account.is_system,
        )
        for bucket in Bucket.values:
            setattr(position, bucket, amounts.get((asset_id, bucket), Decimal(0)))
        positions.append(position)
    return sorted(positions, key=lambda position: position.asset.code)


def account_postings(
    *,
    account: Account,
    as_at: datetime | None = None,
    before: datetime | None = None,
    asset_kind: str | None = None,
) -> QuerySet[Posting]:
    """The account's postings, of entries created at or before ``as_at`` and/or
    strictly before ``before`` (unordered)."""
    postings = Posting.objects.filter(account=account)
    if as_at is not None:
        postings = postings.filter(entry__created_at__lte=as_at)
    if before is not None:
        postings = postings.filter(entry__created_at__lt=before)
    if asset_kind is not None:
        postings = postings.filter(asset__kind=asset_kind)
    return postings


@dataclass(frozen=True, slots=True)
class RunningFigures:
    """An account's position in one asset right after a journal entry."""

    #: The posting's bucket.
    balance: Decimal
    #: All buckets of the asset.
    total: Decimal
    #: The cost base of the position.
    cost: Decimal


def running_figures(
    *, account: Account, posting_ids: Iterable[int]
) -> dict[int, RunningFigures]:
    """The account's figures right after the entry of each of ``posting_ids``.

    Figures are taken after the whole entry, never halfway through it (a hold
    moves units from available to held without changing the total). Postings of
    one (account, asset) are numbered in the order they were made: every writer
    holds that balance's row lock from before it posts until it commits, so ``id``
    order (and entry order) is ledger order there, and the running sums run in it.
    Two queries whatever the page: the sums before the page's first posting, and
    every posting of the account from there to the end of its last entry.
    """
    wanted = set(posting_ids)
    if not wanted:
        return {}
    first = min(wanted)
    last_entry_id = Posting.objects.get(pk=max(wanted)).entry_id
    before = Posting.objects.filter(account=account, pk__lt=first)
    buckets = defaultdict(Decimal, posting_sums("asset_id", "bucket", postings=before))
    totals: defaultdict[int, Decimal] = defaultdict(Decimal)
    for (asset_id, _), amount in buckets.items():
        totals[asset_id] += amount
    costs: defaultdict[int, Decimal] = defaultdict(Decimal)
    for (asset_id,), cost in posting_sums(
        "asset_id", field="cost_delta", postings=before
    ).items():
        costs[asset_id] = cost
    rows = (
        Posting.objects.filter(
            account=account, pk__gte=first, entry_id__lte=last_entry_id
        )
        .order_by("pk")
        .values_list("pk", "entry_id", "asset_id", "bucket", "amount", "cost_delta")
    )
    figures = {}
    for _, group in groupby(rows.iterator(), key=lambda row: row[1]):
        lines = list(group)
        for _, _, asset_id, bucket, amount, cost_delta in lines:
            buckets[(asset_id, bucket)] += amount
            totals[asset_id] += amount
            costs[asset_id] += cost_delta
        for posting_id, _, asset_id, bucket, _, _ in lines:
            if posting_id in wanted:
                figures[posting_id] = RunningFigures(
                    buckets[(asset_id, bucket)], totals[asset_id], costs[asset_id]
                )
    return figures
