"""Helpers for the registry's tests: transfers, and "nothing changed" snapshots."""

from decimal import Decimal
from typing import Any

from django.db.models import Sum

from registry.models import AuditRecord, Balance, JournalEntry, Posting, Transfer


def pending_withdrawals_total(account_id: int, asset_id: int) -> Decimal:
    """What the pending withdrawals of an (account, asset) hold."""
    total = Transfer.objects.filter(
        account_id=account_id,
        asset_id=asset_id,
        kind=Transfer.Kind.WITHDRAWAL,
        status=Transfer.Status.PENDING,
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def registry_state() -> tuple[Any, ...]:
    """Everything a refused request must leave unchanged."""
    balances = tuple(
        Balance.objects.order_by("pk").values_list(
            "pk", "available", "held", "unsettled", "cost"
        )
    )
    return (
        Transfer.objects.count(),
        JournalEntry.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
        balances,
    )


def postings_of(transfer: Transfer) -> list[tuple[str, str, str, str, Decimal]]:
    """The transfer's journal lines: (entry kind, account number, asset, bucket,
    amount), in entry order then sorted within an entry."""
    lines = []
    for entry in transfer.journal_entries():
        lines += sorted(
            (entry.kind, p.account.number, p.asset.code, p.bucket, p.amount)
            for p in entry.postings.select_related("account", "asset")
        )
    return lines
