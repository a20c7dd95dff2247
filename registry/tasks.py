"""Registry batch jobs (Celery). Each task just calls a service or selector."""

import logging

from celery import shared_task

from registry.selectors import ledger_differences

logger = logging.getLogger(__name__)


@shared_task
def ledger_reconcile_task() -> int:
    """Check stored balances against the ledger; log every difference loudly.

    Read-only, so safe to run twice. Returns the number of differences."""
    differences = ledger_differences()
    for difference in differences:
        logger.error("ledger difference: %s", difference)
    if not differences:
        logger.info("ledger reconciled: no differences")
    return len(differences)
