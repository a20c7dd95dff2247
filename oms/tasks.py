"""OMS batch jobs (Celery). Each task just calls a service."""

from celery import shared_task

from oms.services import orders_expire_due


@shared_task
def orders_expire_task() -> int:
    """Queue the expiry of DAY/GTD orders that are due (idempotent)."""
    return orders_expire_due()
