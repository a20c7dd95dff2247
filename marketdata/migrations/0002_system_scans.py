"""Install the system scans: top gainers, top losers and most active."""

from django.db import migrations

# (name, criteria, order_by, limit): written out here, not imported, so the
# migration keeps meaning the same whatever the code becomes.
SYSTEM_SCANS = [
    ("Top gainers", "change_percent > 0", "-change_percent", 10),
    ("Top losers", "change_percent < 0", "change_percent", 10),
    ("Most active", "volume > 0", "-volume", 10),
]


def system_scans_create(apps, schema_editor):
    """Create (or restore) the system scans; their matches fill in at the next
    matching batch."""
    Scan = apps.get_model("marketdata", "Scan")
    scans = Scan.objects.using(schema_editor.connection.alias)
    for name, criteria, order_by, limit in SYSTEM_SCANS:
        scans.update_or_create(
            owner=None,
            name=name,
            defaults={"criteria": criteria, "order_by": order_by, "limit": limit},
        )


def system_scans_delete(apps, schema_editor):
    Scan = apps.get_model("marketdata", "Scan")
    Scan.objects.using(schema_editor.connection.alias).filter(
        owner=None, name__in=[name for name, *_ in SYSTEM_SCANS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("marketdata", "0001_initial")]

    operations = [
        migrations.RunPython(system_scans_create, system_scans_delete),
    ]
