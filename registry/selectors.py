"""Registry reads: reconciliation of stored balances against the ledger."""

from dataclasses import dataclass
from decimal import Decimal

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


def ledger_differences() -> list[Difference]:
    """Every asset whose postings do not sum to zero, and every balance bucket that
    differs from the sum of its postings. Empty when the registry is consistent."""
    differences = [
        Difference("*", row["asset__code"], "sum", Decimal(0), row["total"])
        for row in Posting.objects.values("asset__code").annotate(total=Sum("amount"))
        if row["total"] != 0
    ]
    sums = {
        (row["account_id"], row["asset_id"], row["bucket"]): row["total"]
        for row in Posting.objects.values("account_id", "asset_id", "bucket").annotate(
            total=Sum("amount")
        )
    }
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
