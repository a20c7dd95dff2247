"""Account statements and transaction descriptions, derived from the ledger.

A statement covers a period of an account: opening and closing figures per asset and
bucket, every posting in between with its running balance, the trades executed in
the period with their price, quantity, value and fee, the fees total, and the
positions (quantity, average cost, cost base) at the end. Everything comes from the
postings (``Posting`` and its ``JournalEntry``), so the statement reconciles by
construction: opening + movements = closing, per asset and bucket, exactly.

Trades live in the ``exchange`` app, which depends on this one: it registers how to
describe them (:func:`trade_details_register`) when it starts.
"""

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any

from django.template.loader import render_to_string
from django.utils import timezone

from registry.models import Account, Asset, Balance, Bucket, JournalEntry, Posting
from registry.selectors import account_postings, positions_as_at, posting_sums
from registry.wire import cost_text

_TRADE_REFERENCE = re.compile(r"^trade:(\d+)$")


@dataclass(frozen=True, slots=True)
class TradeDetail:
    """One trade as seen from one of its accounts (the buyer or the seller)."""

    trade_id: int
    executed_at: datetime
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    value: Decimal
    fee: Decimal
    currency: str
    busted_at: datetime | None = None
    corrected_from: int | None = None

    @property
    def summary(self) -> str:
        return f"{self.side.capitalize()} {self.quantity} {self.symbol} @ {self.price}"


#: (account id, trade ids) -> that account's side of each of those trades (a trade
#: between two orders of the same account gives two details).
TradeDetails = Callable[[int, Collection[int]], list[TradeDetail]]
_trade_details: list[TradeDetails] = []


def trade_details_register(provider: TradeDetails) -> None:
    """Describe trades with ``provider`` (called by the exchange app at start-up)."""
    if provider not in _trade_details:
        _trade_details.append(provider)


def trade_details(account_id: int, trade_ids: Collection[int]) -> list[TradeDetail]:
    """The account's side of ``trade_ids``, from the registered providers."""
    if not trade_ids:
        return []
    return [
        detail
        for provider in _trade_details
        for detail in provider(account_id, trade_ids)
    ]


def trade_id_of(reference: str) -> int | None:
    """The trade id of a ``trade:<id>`` reference, else None."""
    match = _TRADE_REFERENCE.match(reference)
    return int(match.group(1)) if match else None


def describe(entry: JournalEntry, details: list[TradeDetail]) -> str:
    """A line's text: the entry's kind, the trade it refers to, and its reason."""
    text = entry.get_kind_display()
    if details:
        text += ": " + "; ".join(detail.summary for detail in details)
    if entry.reason:
        text += f" ({entry.reason})"
    return text


def descriptions(account: Account, entries: Iterable[JournalEntry]) -> dict[int, str]:
    """Description of each entry (by id), one trade query for all of them."""
    entries = list(entries)
    trade_ids = {
        trade_id
        for trade_id in (trade_id_of(entry.reference) for entry in entries)
        if trade_id is not None
    }
    by_trade: defaultdict[int, list[TradeDetail]] = defaultdict(list)
    for detail in trade_details(account.pk, trade_ids):
        by_trade[detail.trade_id].append(detail)
    return {
        entry.pk: describe(entry, by_trade.get(trade_id_of(entry.reference) or 0, []))
        for entry in entries
    }


# Statements -------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    """The first instant of ``day`` in the server's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


def day_end(day: date) -> datetime:
    """The last instant (microsecond) of ``day`` in the server's time zone."""
    return day_start(day + timedelta(days=1)) - timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class StatementBalance:
    asset: Asset
    bucket: str
    opening: Decimal
    movements: Decimal
    closing: Decimal


@dataclass(frozen=True, slots=True)
class StatementLine:
    created_at: datetime
    entry_id: int
    posting_id: int
    kind: str
    reference: str
    description: str
    asset: Asset
    bucket: str
    amount: Decimal
    #: The bucket's running balance right after this line's entry.
    balance: Decimal


@dataclass(frozen=True, slots=True)
class StatementFees:
    currency: str
    #: Fees of the trades executed in the period.
    charged: Decimal
    #: Fees given back by busts made in the period.
    refunded: Decimal

    @property
    def total(self) -> Decimal:
        return self.charged - self.refunded


@dataclass(frozen=True, slots=True)
class Statement:
    account: Account
    #: The period: entries created at or after ``start`` and at or before ``end``.
    start: datetime
    end: datetime
    generated_at: datetime
    balances: list[StatementBalance]
    lines: list[StatementLine]
    trades: list[TradeDetail]
    busts: list[TradeDetail]
    fees: list[StatementFees]
    #: Security positions at ``end`` (non-zero quantity or cost).
    positions: list[Balance]


def account_statement(*, account: Account, start: datetime, end: datetime) -> Statement:
    """The statement of ``account`` for the entries created in [start, end].

    Preconditions (checked by the callers, which answer with their own errors):
    ``start`` <= ``end``, both aware. Opening figures are the postings before
    ``start``; closing figures are those at or before ``end``, summed separately, so
    a statement whose movements did not add up would show it. Read-only.
    """
    opening = _figures(account, before=start)
    closing = _figures(account, as_at=end)
    postings = list(
        Posting.objects.filter(
            account=account,
            entry__created_at__gte=start,
            entry__created_at__lte=end,
        )
        .select_related("entry", "asset")
        .order_by("entry__created_at", "entry_id", "pk")
    )
    entries = {posting.entry_id: posting.entry for posting in postings}
    texts = descriptions(account, entries.values())
    running = defaultdict(Decimal, opening)
    movements: defaultdict[tuple[int, str], Decimal] = defaultdict(Decimal)
    lines = []
    for _, group in groupby(postings, key=lambda posting: posting.entry_id):
        entry_postings = list(group)
        for posting in entry_postings:
            running[(posting.asset_id, posting.bucket)] += posting.amount
            movements[(posting.asset_id, posting.bucket)] += posting.amount
        # Running balances are those after the whole entry.
        lines += [_line(p, texts, running) for p in entry_postings]
    positions = positions_as_at(account=account, as_at=end)
    assets = {position.asset_id: position.asset for position in positions}
    balances = [
        StatementBalance(
            asset=assets[asset_id],
            bucket=bucket,
            opening=opening.get((asset_id, bucket), Decimal(0)),
            movements=movements[(asset_id, bucket)],
            closing=closing.get((asset_id, bucket), Decimal(0)),
        )
        for asset_id in sorted(assets, key=lambda a: assets[a].code)
        for bucket in Bucket.values
    ]
    trades, busts = _trades_and_busts(account, entries.values())
    return Statement(
        account=account,
        start=start,
        end=end,
        generated_at=timezone.now(),
        balances=balances,
        lines=lines,
        trades=trades,
        busts=busts,
        fees=_fees(trades, busts),
        positions=[
            p
            for p in positions
            if p.asset.kind == Asset.Kind.SECURITY and (p.total or p.cost)
        ],
    )


def _line(
    posting: Posting, texts: dict[int, str], running: dict[tuple[int, str], Decimal]
) -> StatementLine:
    entry = posting.entry
    return StatementLine(
        created_at=entry.created_at,
        entry_id=entry.pk,
        posting_id=posting.pk,
        kind=entry.kind,
        reference=entry.reference,
        description=texts[entry.pk],
        asset=posting.asset,
        bucket=posting.bucket,
        amount=posting.amount,
        balance=running[(posting.asset_id, posting.bucket)],
    )


def _figures(
    account: Account, *, as_at: datetime | None = None, before: datetime | None = None
) -> dict[tuple[int, str], Decimal]:
    """{(asset id, bucket): sum} of the account's postings up to a bound."""
    postings = account_postings(account=account, as_at=as_at, before=before)
    return {
        (asset_id, bucket): total
        for (asset_id, bucket), total in posting_sums(
            "asset_id", "bucket", postings=postings
        ).items()
    }


def _trades_and_busts(
    account: Account, entries: Iterable[JournalEntry]
) -> tuple[list[TradeDetail], list[TradeDetail]]:
    """The trades executed (kind ``trade``) and busted (kind ``bust``) by entries of
    the period, oldest first."""
    executed, busted = set(), set()
    for entry in entries:
        trade_id = trade_id_of(entry.reference)
        if trade_id is None:
            continue
        if entry.kind == JournalEntry.Kind.TRADE:
            executed.add(trade_id)
        elif entry.kind == JournalEntry.Kind.BUST:
            busted.add(trade_id)
    details = trade_details(account.pk, executed | busted)
    order = sorted(details, key=lambda detail: (detail.executed_at, detail.trade_id))
    return (
        [detail for detail in order if detail.trade_id in executed],
        [detail for detail in order if detail.trade_id in busted],
    )


def _fees(trades: list[TradeDetail], busts: list[TradeDetail]) -> list[StatementFees]:
    charged: defaultdict[str, Decimal] = defaultdict(Decimal)
    refunded: defaultdict[str, Decimal] = defaultdict(Decimal)
    for detail in trades:
        charged[detail.currency] += detail.fee
    for detail in busts:
        refunded[detail.currency] += detail.fee
    codes = sorted(charged.keys() | refunded.keys())
    assets = {asset.code: asset for asset in Asset.objects.filter(code__in=codes)}
    return [
        StatementFees(
            code,
            assets[code].quantize(charged[code]),
            assets[code].quantize(refunded[code]),
        )
        for code in codes
    ]


# Output -----------------------------------------------------------------------------


def _trade_to_wire(detail: TradeDetail) -> dict[str, Any]:
    return {
        "trade": detail.trade_id,
        "executed_at": detail.executed_at.isoformat(),
        "symbol": detail.symbol,
        "side": detail.side,
        "price": str(detail.price),
        "quantity": str(detail.quantity),
        "value": str(detail.value),
        "fee": str(detail.fee),
        "currency": detail.currency,
        "busted_at": detail.busted_at.isoformat() if detail.busted_at else None,
        "corrected_from": detail.corrected_from,
    }


def _position_to_wire(position: Balance) -> dict[str, Any]:
    asset = position.asset
    return {
        "symbol": asset.code,
        "quantity": str(asset.quantize(position.total)),
        "available": str(asset.quantize(position.available)),
        "held": str(asset.quantize(position.held)),
        "unsettled": str(asset.quantize(position.unsettled)),
        "average_cost": cost_text(asset, position.average_cost),
        "cost": cost_text(asset, position.cost),
    }


def statement_to_wire(statement: Statement) -> dict[str, Any]:
    """The statement as JSON: decimals as strings in each asset's own scale."""
    account = statement.account
    return {
        "account": {"id": account.pk, "number": account.number, "name": account.name},
        "from": statement.start.isoformat(),
        "to": statement.end.isoformat(),
        "generated_at": statement.generated_at.isoformat(),
        "balances": [
            {
                "asset": row.asset.code,
                "bucket": row.bucket,
                "opening": str(row.asset.quantize(row.opening)),
                "movements": str(row.asset.quantize(row.movements)),
                "closing": str(row.asset.quantize(row.closing)),
            }
            for row in statement.balances
        ],
        "transactions": [
            {
                "created_at": line.created_at.isoformat(),
                "entry": line.entry_id,
                "id": line.posting_id,
                "kind": line.kind,
                "reference": line.reference,
                "description": line.description,
                "asset": line.asset.code,
                "bucket": line.bucket,
                "amount": str(line.asset.quantize(line.amount)),
                "balance": str(line.asset.quantize(line.balance)),
            }
            for line in statement.lines
        ],
        "trades": [_trade_to_wire(detail) for detail in statement.trades],
        "busts": [_trade_to_wire(detail) for detail in statement.busts],
        "fees": [
            {
                "currency": fees.currency,
                "charged": str(fees.charged),
                "refunded": str(fees.refunded),
                "total": str(fees.total),
            }
            for fees in statement.fees
        ],
        "positions": [_position_to_wire(p) for p in statement.positions],
    }


def statement_csv(statement: Statement) -> str:
    """The statement as CSV: titled sections, each with its own header row, separated
    by an empty row (the same figures and text as the JSON)."""
    data = statement_to_wire(statement)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    account = data["account"]
    writer.writerow(["Statement", account["number"], account["name"]])
    writer.writerow(["From", data["from"], "To", data["to"]])
    writer.writerow(["Generated", data["generated_at"]])
    sections: list[tuple[str, list[str], list[dict[str, Any]]]] = [
        (
            "Balances",
            ["asset", "bucket", "opening", "movements", "closing"],
            data["balances"],
        ),
        (
            "Transactions",
            [
                "created_at",
                "entry",
                "kind",
                "reference",
                "description",
                "asset",
                "bucket",
                "amount",
                "balance",
            ],
            data["transactions"],
        ),
        (
            "Trades",
            [
                "executed_at",
                "trade",
                "symbol",
                "side",
                "price",
                "quantity",
                "value",
                "fee",
                "currency",
                "busted_at",
            ],
            data["trades"],
        ),
        (
            "Busts",
            [
                "executed_at",
                "trade",
                "symbol",
                "side",
                "price",
                "quantity",
                "value",
                "fee",
                "currency",
                "busted_at",
            ],
            data["busts"],
        ),
        ("Fees", ["currency", "charged", "refunded", "total"], data["fees"]),
        (
            "Positions",
            [
                "symbol",
                "quantity",
                "available",
                "held",
                "unsettled",
                "average_cost",
                "cost",
            ],
            data["positions"],
        ),
    ]
    for title, columns, rows in sections:
        writer.writerow([])
        writer.writerow([title])
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue()


def statement_html(statement: Statement) -> str:
    """The statement as a printable HTML page (``registry/statement.html``)."""
    return render_to_string(
        "registry/statement.html",
        {"statement": statement, "data": statement_to_wire(statement)},
    )


def statement_filename(statement: Statement, extension: str) -> str:
    """``statement-<account number>-<from date>-<to date>.<extension>``."""
    number = re.sub(r"[^A-Za-z0-9_-]", "_", statement.account.number)
    start = statement.start.date().isoformat()
    end = statement.end.date().isoformat()
    return f"statement-{number}-{start}-{end}.{extension}"
