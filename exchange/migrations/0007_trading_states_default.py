"""Give every existing market the standard trading states.

The definitions are copied here (not imported) so the migration keeps meaning what
it meant when written. The reverse removes exactly these standard rows.
"""

from django.db import migrations

#: code -> (name, place, amend, cancel, match, is_auction, uncross_on_entry)
STANDARD = {
    "pre_open": ("Pre-open", True, True, True, False, True, False),
    "opening_auction": ("Opening auction", False, False, False, False, True, False),
    "open": ("Open", True, True, True, True, False, True),
    "closing_auction": ("Closing auction", True, True, True, False, True, False),
    "closed": ("Closed", False, False, True, False, False, True),
    "halted": ("Halted", False, False, True, False, False, False),
}


def create_standard_states(apps, schema_editor):
    Market = apps.get_model("exchange", "Market")
    TradingState = apps.get_model("exchange", "TradingState")
    rows = []
    for market in Market.objects.all():
        existing = set(
            TradingState.objects.filter(market=market).values_list("code", flat=True)
        )
        for code, (
            name,
            place,
            amend,
            cancel,
            match,
            auction,
            uncross,
        ) in STANDARD.items():
            if code in existing:
                continue
            rows.append(
                TradingState(
                    market=market,
                    code=code,
                    name=name,
                    allows_place=place,
                    allows_amend=amend,
                    allows_cancel=cancel,
                    allows_match=match,
                    is_auction=auction,
                    uncross_on_entry=uncross,
                )
            )
    TradingState.objects.bulk_create(rows)


def delete_standard_states(apps, schema_editor):
    TradingState = apps.get_model("exchange", "TradingState")
    TradingState.objects.filter(code__in=list(STANDARD)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0006_trading_states"),
    ]

    operations = [
        migrations.RunPython(create_standard_states, delete_standard_states),
    ]
