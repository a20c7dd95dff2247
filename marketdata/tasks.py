"""Market-data background jobs (Celery). Each task just calls a service."""

from celery import shared_task


@shared_task
def scans_evaluate_task(symbol_ids: list[int]) -> int:
    """Bring every scan up to date after these symbols' summaries changed
    (scheduled after each matching batch commits). Idempotent, so a redelivery
    is harmless. Returns the number of scans whose matches changed."""
    # Imported here: marketdata.prices schedules this task and marketdata.scans
    # imports prices, so a module-level import would be circular.
    from marketdata.scans import scans_evaluate

    return scans_evaluate(symbol_ids=symbol_ids)
