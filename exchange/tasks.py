"""Exchange batch jobs (Celery). Each task just calls a service."""

import logging

from celery import shared_task
from django.utils import timezone

from exchange.services import sessions_advance
from exchange.settlement import settlement_run

logger = logging.getLogger(__name__)


@shared_task
def settlement_run_task() -> int:
    """Settle every trade whose settlement date has come (in its market's
    timezone). Idempotent and safe to run concurrently with itself: each trade is
    settled exactly once. Returns the number of trades settled by this run."""
    return len(settlement_run().settled)


@shared_task
def sessions_advance_task() -> int:
    """Move markets to their scheduled trading states and end expired
    circuit-breaker halts (beat runs it every few seconds). Idempotent: a
    redelivered or overlapping run changes nothing more. Returns the number of
    changes made."""
    done = sessions_advance(now=timezone.now())
    for code, previous, new in done.transitions:
        logger.info("market %s: %s -> %s (schedule)", code, previous, new)
    for identifier in done.resumed:
        logger.info("symbol %s: circuit-breaker halt ended", identifier)
    return len(done.transitions) + len(done.resumed)
