"""The double-entry ledger: balanced journal entries applied to locked balances.

Every change to a balance goes through :class:`LedgerBatch`, so the stored figures
always equal the sum of their postings per (account, asset, bucket).
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from django.db import connection
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.utils import timezone

from config.db import bulk_update_rows
from registry.models import Account, Balance, Bucket, JournalEntry, Posting

BalanceKey = tuple[int, int]  # (account_id, asset_id)

# Keyed by the bucket's value: ``Posting.bucket`` reads back as a plain ``str``.
_BUCKET_FIELDS: dict[str, str] = {
    Bucket.AVAILABLE: "available",
    Bucket.HELD: "held",
    Bucket.UNSETTLED: "unsettled",
}


class LedgerError(Exception):
    """Base of the ledger's errors; ``code`` is the API error code."""

    code = "ledger_error"


class UnbalancedEntryError(LedgerError):
    code = "unbalanced_entry"


class InsufficientBalanceError(LedgerError):
    """A client bucket would go negative."""

    code = "insufficient_balance"

    def __init__(self, key: BalanceKey, bucket: str, shortfall: Decimal) -> None:
        self.key = key
        self.bucket = bucket
        self.shortfall = shortfall
        super().__init__(
            f"account {key[0]} asset {key[1]} {bucket} is short by {shortfall}"
        )


@dataclass(frozen=True, slots=True)
class Line:
    """One posting to be made: a signed amount to an account's asset bucket.

    ``cost_delta`` changes the cost base of the (account, asset) position (not a
    ledger amount: it need not balance); a line may carry only a cost change.
    """

    account_id: int
    asset_id: int
    bucket: str
    amount: Decimal
    cost_delta: Decimal = Decimal(0)


@dataclass(slots=True)
class _PendingEntry:
    kind: str
    lines: list[Line]
    reference: str
    reason: str
    acting_user_id: int | None
    entry: JournalEntry | None = field(default=None)


def balances_lock(keys: Iterable[BalanceKey]) -> dict[BalanceKey, Balance]:
    """Lock exactly the balances of ``keys``, creating missing rows, in one order.

    Precondition: inside a transaction. Lock order: every balance row, existing or
    new, is locked in ascending (account_id, asset_id) order, and only the pairs
    asked for (never the accounts x assets cross product). Two statements, always:

    1. ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` creates the missing rows
       (in the same order; ``allow_negative`` from the account's kind). A new row
       is held by its inserter until commit, so inserting before locking keeps a
       concurrent creator of the same pair waiting *before* it locks anything;
    2. one ordered ``SELECT ... FOR UPDATE`` locks every wanted row.

    The fixed order is what keeps concurrent writers (order entry, matching
    workers, transfers) free of deadlocks.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    _create_missing(wanted)
    rows = (
        Balance.objects.select_for_update(of=("self",))
        .select_related("asset")
        .filter(_pairs_condition(wanted))
        .order_by("account_id", "asset_id")
    )
    return {(balance.account_id, balance.asset_id): balance for balance in rows}


def _pairs_sql(keys: list[BalanceKey]) -> tuple[str, list[int]]:
    """``VALUES (%s, %s), ...`` of ``keys`` (columns ``column1``, ``column2``)."""
    params = [part for key in keys for part in key]
    return "VALUES " + ", ".join(["(%s, %s)"] * len(keys)), params


def _pairs_condition(keys: list[BalanceKey]) -> RawSQL:
    """``(account_id, asset_id) IN (VALUES ...)``: exactly these pairs."""
    table = connection.ops.quote_name(Balance._meta.db_table)
    values, params = _pairs_sql(keys)
    return RawSQL(  # noqa: S611 (identifiers and placeholders, not input)
        f"({table}.account_id, {table}.asset_id) IN ({values})",
        params,
        output_field=BooleanField(),
    )


def _create_missing(keys: list[BalanceKey]) -> None:
    """Insert a zero balance for each of ``keys`` that has none, in key order.

    System (non-client) accounts may go negative. Existing rows are filtered out
    before the insert so that no id is drawn from the sequence for them.
    """
    quote = connection.ops.quote_name
    balance = quote(Balance._meta.db_table)
    account = quote(Account._meta.db_table)
    values, params = _pairs_sql(keys)
    updated_at = Balance._meta.get_field("updated_at")
    now = updated_at.get_db_prep_value(timezone.now(), connection)
    sql = (
        f"INSERT INTO {balance} (account_id, asset_id, available, held, "  # noqa: S608 (identifiers, not input)
        "unsettled, cost, allow_negative, updated_at) "
        "SELECT v.column1, v.column2, 0, 0, 0, 0, a.kind <> %s, %s "
        f"FROM ({values}) AS v JOIN {account} AS a ON a.id = v.column1 "
        f"WHERE NOT EXISTS (SELECT 1 FROM {balance} AS b "
        "WHERE b.account_id = v.column1 AND b.asset_id = v.column2) "
        "ORDER BY v.column1, v.column2 "
        "ON CONFLICT (account_id, asset_id) DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Account.Kind.CLIENT.value, now, *params])


class LedgerBatch:
    """Journal entries posted against a set of locked balances, written at ``flush``.

    Create it inside a transaction with every balance key the batch may touch (it
    locks exactly those, see :func:`balances_lock` for the order); each
    ``post`` checks that the entry balances per asset and that no client bucket goes
    negative, and updates the in-memory balances; ``flush`` writes entries, postings
    and balances in three bulk statements.
    """

    def __init__(self, keys: Iterable[BalanceKey]) -> None:
        self.balances = balances_lock(keys)
        self._entries: list[_PendingEntry] = []
        self._dirty: set[BalanceKey] = set()

    def balance(self, account_id: int, asset_id: int) -> Balance:
        return self.balances[(account_id, asset_id)]

    def post(
        self,
        *,
        kind: str,
        lines: Sequence[Line],
        reference: str = "",
        reason: str = "",
        acting_user_id: int | None = None,
    ) -> None:
        """Apply one balanced entry; raises and applies nothing if it is invalid.

        Amounts must sum to zero per asset (``UnbalancedEntryError``) and leave no
        client bucket negative (``InsufficientBalanceError``); the lines' cost
        deltas change the positions' cost bases. Lines with neither an amount nor
        a cost change are dropped.
        """
        lines = [line for line in lines if line.amount or line.cost_delta]
        totals: dict[int, Decimal] = defaultdict(Decimal)
        for line in lines:
            totals[line.asset_id] += line.amount
        unbalanced = {asset: total for asset, total in totals.items() if total}
        if unbalanced:
            raise UnbalancedEntryError(
                f"entry {kind} {reference} is off by {unbalanced}"
            )
        deltas: dict[tuple[BalanceKey, str], Decimal] = defaultdict(Decimal)
        for line in lines:
            deltas[((line.account_id, line.asset_id), line.bucket)] += line.amount
        for (key, bucket), delta in deltas.items():
            balance = self.balances[key]
            new_value = getattr(balance, _BUCKET_FIELDS[bucket]) + delta
            if new_value < 0 and not balance.allow_negative:
                raise InsufficientBalanceError(key, bucket, -new_value)
        for (key, bucket), delta in deltas.items():
            balance = self.balances[key]
            name = _BUCKET_FIELDS[bucket]
            setattr(balance, name, getattr(balance, name) + delta)
            self._dirty.add(key)
        for line in lines:
            if line.cost_delta:
                key = (line.account_id, line.asset_id)
                self.balances[key].cost += line.cost_delta
                self._dirty.add(key)
        self._entries.append(
            _PendingEntry(kind, lines, reference, reason, acting_user_id)
        )

    def adjust_cost(self, account_id: int, asset_id: int, delta: Decimal) -> None:
        """Change the cost base of a position, as part of the entry posted last.

        The change is recorded on that entry's first line for (account, asset), or
        on an added line with no amount if it has none, so the cost base stays
        derivable from the postings (``Posting.cost_delta``). Raises
        ``LedgerError`` if nothing has been posted since the last ``flush``: a
        cost change always belongs to the entry that caused it.
        """
        if not delta:
            return
        if not self._entries:
            raise LedgerError("adjust_cost needs the entry it belongs to posted first")
        pending = self._entries[-1]
        for index, line in enumerate(pending.lines):
            if (line.account_id, line.asset_id) == (account_id, asset_id):
                pending.lines[index] = replace(line, cost_delta=line.cost_delta + delta)
                break
        else:
            pending.lines.append(
                Line(account_id, asset_id, Bucket.AVAILABLE, Decimal(0), delta)
            )
        self.balances[(account_id, asset_id)].cost += delta
        self._dirty.add((account_id, asset_id))

    def flush(self) -> list[JournalEntry]:
        """Write what was posted; returns the journal entries created."""
        if not self._entries and not self._dirty:
            return []
        entries = JournalEntry.objects.bulk_create(
            [
                JournalEntry(
                    kind=pending.kind,
                    reference=pending.reference,
                    reason=pending.reason,
                    acting_user_id=pending.acting_user_id,
                )
                for pending in self._entries
            ]
        )
        postings = [
            Posting(
                entry=entry,
                account_id=line.account_id,
                asset_id=line.asset_id,
                bucket=line.bucket,
                amount=line.amount,
                cost_delta=line.cost_delta,
            )
            for pending, entry in zip(self._entries, entries, strict=True)
            for line in pending.lines
        ]
        Posting.objects.bulk_create(postings)
        dirty = [self.balances[key] for key in sorted(self._dirty)]
        now = timezone.now()
        for balance in dirty:
            balance.updated_at = now
        bulk_update_rows(
            Balance, dirty, ["available", "held", "unsettled", "cost", "updated_at"]
        )
        self._entries.clear()
        self._dirty.clear()
        return entries
