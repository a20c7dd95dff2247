"""Registry reads: reconciliation of stored balances against the ledger."""

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Sum

from registry.models import Balance, Posting


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


def posting_sums(*group_by: str) -> dict[tuple[Any, ...], Decimal]:
    """Sum of posting amounts grouped by ``group_by`` fields, exactly.

    PostgreSQL sums NUMERIC exactly; SQLite would sum floating-point values, so
    there the amounts (each exact once read back as Decimal) are added in Python.
    """
    if connection.vendor == "postgresql":
        rows = Posting.objects.values(*group_by).annotate(total=Sum("amount"))
        return {tuple(row[f] for f in group_by): row["total"] for row in rows}
    totals: defaultdict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    for row in Posting.objects.values_list(*group_by, "amount").iterator():
        totals[row[:-1]] += row[-1]
    return dict(totals)


def ledger_differences() -> list[Difference]:
    """Every asset whose postings do not sum to zero, and every balance bucket that
    differs from the sum of its postings. Empty when the registry is consistent."""
    differences = [
        Difference("*", asset_code, "sum", Decimal(0), total)
        for (asset_code,), total in sorted(posting_sums("asset__code").items())
        if total != 0
    ]
    sums = posting_sums("account_id", "asset_id", "bucket")
    for balance in Balance.objects.select_related("account", "asset").order_by("pk"):
        for bucket in ("available", "held", "unsettled"):
            stored = getattr(balance, bucket)
            ledger = sums.get(
                (balance.account_id, balance.asset_id, bucket), Decimal(0)
            )
            if stored != ledger:
                differences.append(
                    Difference(
                        balance.account.number,
                        balance.asset.code,
                        bucket,
                        stored,
                        ledger,
                    )
                )
    return differences
