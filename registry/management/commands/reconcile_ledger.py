"""``manage.py reconcile_ledger``: compare stored balances with the ledger."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from registry.selectors import ledger_differences


class Command(BaseCommand):
    help = "Check that every asset sums to zero and every balance equals its postings."

    def handle(self, *args: Any, **options: Any) -> None:
        differences = ledger_differences()
        for difference in differences:
            self.stderr.write(str(difference))
        if differences:
            raise CommandError(
                f"{len(differences)} difference(s) between balances and the ledger"
            )
        self.stdout.write("The ledger reconciles: every asset sums to zero.")
