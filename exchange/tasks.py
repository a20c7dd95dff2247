"""Exchange batch jobs (Celery). Each task just calls a service."""

from celery import shared_task

from exchange.settlement import settlement_run


@shared_task
def settlement_run_task() -> int:
    """Settle every trade whose settlement date has come (in its market's
    timezone). Idempotent and safe to run concurrently with itself: each trade is
    settled exactly once. Returns the number of trades settled by this run."""
    return len(settlement_run().settled)
