"""Record cost-base changes on the postings (``Posting.cost_delta``).

Until now the cost base of a position lived only on ``Balance.cost``. The back-fill
replays the ledger in entry order exactly as the matching worker posted trades: the
buyer's cost rises by what left its held cash (value + fee), the seller's falls by
its average cost of the units sold (rounded down to the currency). Whatever a stored
cost base still differs by (nothing, unless it was edited by hand) is put on the
position's latest posting, so the stored figures and the ledger agree afterwards.
"""

from collections import defaultdict
from decimal import ROUND_FLOOR, Decimal
from itertools import groupby

from django.db import migrations, models

AMOUNT = {"max_digits": 30, "decimal_places": 10}


def _trade_cost_deltas(lines, kinds, scales, quantity, cost):
    """{posting id: cost delta} of one trade entry, from the positions before it."""
    deltas = {}
    securities = [line for line in lines if kinds[line[3]] == "security"]
    held_cash = {
        line[2]: line
        for line in lines
        if kinds[line[3]] == "currency" and line[4] == "held"
    }
    for posting_id, _, account_id, asset_id, _, amount in securities:
        if amount > 0 and account_id in held_cash:
            deltas[posting_id] = -held_cash[account_id][5]
        elif amount < 0:
            total = quantity[(account_id, asset_id)]
            if total:
                currency_id = next(iter(held_cash.values()))[3] if held_cash else None
                unit = Decimal(1).scaleb(-scales.get(currency_id, 2))
                deltas[posting_id] = -(
                    cost[(account_id, asset_id)] * -amount / total
                ).quantize(unit, rounding=ROUND_FLOOR)
    return deltas


def backfill_cost(apps, schema_editor):
    Asset = apps.get_model("registry", "Asset")
    Balance = apps.get_model("registry", "Balance")
    Posting = apps.get_model("registry", "Posting")
    kinds = dict(Asset.objects.values_list("pk", "kind"))
    scales = dict(Asset.objects.values_list("pk", "scale"))
    quantity = defaultdict(Decimal)
    cost = defaultdict(Decimal)
    deltas = {}
    last_posting = {}
    rows = (
        Posting.objects.order_by("entry_id", "id")
        .values_list(
            "id", "entry_id", "account_id", "asset_id", "bucket", "amount", "entry__kind"
        )
        .iterator(chunk_size=5000)
    )
    for (_, kind), group in groupby(rows, key=lambda row: (row[1], row[6])):
        lines = [row[:6] for row in group]
        if kind == "trade":
            found = _trade_cost_deltas(lines, kinds, scales, quantity, cost)
            deltas.update(found)
        for posting_id, _, account_id, asset_id, _, amount in lines:
            key = (account_id, asset_id)
            quantity[key] += amount
            cost[key] += deltas.get(posting_id, Decimal(0))
            last_posting[key] = posting_id
    balances = Balance.objects.values_list("account_id", "asset_id", "cost")
    for account_id, asset_id, stored in balances:
        key = (account_id, asset_id)
        residual = stored - cost[key]
        if residual and key in last_posting:
            posting_id = last_posting[key]
            deltas[posting_id] = deltas.get(posting_id, Decimal(0)) + residual
    Posting.objects.bulk_update(
        [
            Posting(pk=posting_id, cost_delta=delta)
            for posting_id, delta in deltas.items()
            if delta
        ],
        ["cost_delta"],
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0002_codes"),
    ]

    operations = [
        migrations.AddField(
            model_name="posting",
            name="cost_delta",
            field=models.DecimalField(default=Decimal(0), **AMOUNT),
        ),
        migrations.RunPython(backfill_cost, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="posting",
            name="posting_amount_not_zero",
        ),
        migrations.AddConstraint(
            model_name="posting",
            constraint=models.CheckConstraint(
                condition=~models.Q(amount=0) | ~models.Q(cost_delta=0),
                name="posting_amount_or_cost_not_zero",
            ),
        ),
    ]
