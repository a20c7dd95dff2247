"""Taking a request that keeps failing on its own out of a market's way.

The worker retries a failed batch one request at a time; a request that still
fails alone after ``MATCHER_REQUEST_ATTEMPTS`` tries is isolated here, in the
worker's (fenced) batch transaction: a place is rejected and its reservation
released, an amend, cancel or expiry is recorded as failed; the request is marked
processed and an ``IsolatedRequest`` row keeps the reason.
"""

import logging
from datetime import datetime

from django.utils import timezone

from exchange.matching.batch import _Batch
from exchange.models import IsolatedRequest, Market
from exchange.trading import MarketTradingStates
from oms.models import Order, OrderEvent, OrderRequest, OrderStatus

logger = logging.getLogger(__name__)

#: ``Order.status_reason`` and ``OrderEvent.reason`` are 64 characters.
_REASON_LENGTH = 64


def _short_reason(kind: str, error: str) -> str:
    prefix = "rejected:isolated" if kind == OrderRequest.Kind.PLACE else "failed"
    return f"{kind}_{prefix}:{error}"[:_REASON_LENGTH]


def request_isolate(
    *,
    worker: object,
    market: Market,
    request: OrderRequest,
    states: MarketTradingStates,
    now: datetime,
    attempts: int,
    error: str,
) -> None:
    """Isolate ``request`` inside the caller's batch transaction (after the fence).

    Locks the request's order, then (for a rejected place) the balance its
    reservation is released from. Publishes the order and balance updates on
    commit, like any batch. Raises whatever the booking raises; the worker then
    falls back to ``request_isolate_bare``."""
    batch = _Batch(worker, market, [request], states, now)  # type: ignore[arg-type]
    batch._load_orders({request.order_id})
    state = batch.states[request.order_id]
    reason = _short_reason(request.kind, error.split(":", 1)[0])
    if request.kind == OrderRequest.Kind.PLACE and (
        state.order.status == OrderStatus.PENDING
    ):
        state.move(OrderStatus.REJECTED, reason=reason)
    else:
        state.move(state.order.status, reason=reason, record=True)
    batch._write()
    _record(market, request, attempts, error)


def request_isolate_bare(
    *, market: Market, request: OrderRequest, attempts: int, error: str
) -> None:
    """The last resort when even ``request_isolate`` fails: mark the request
    processed and record why, leaving its order (and any reservation) as it is,
    so staff can resolve it. Locks the order row."""
    order = Order.objects.select_for_update().get(pk=request.order_id)
    OrderEvent.objects.create(
        order=order,
        from_status=order.status,
        to_status=order.status,
        reason=_short_reason(request.kind, "unresolved"),
    )
    OrderRequest.objects.filter(pk=request.pk).update(processed_at=timezone.now())
    _record(market, request, attempts, f"unresolved: {error}")


def _record(market: Market, request: OrderRequest, attempts: int, error: str) -> None:
    IsolatedRequest.objects.create(
        market=market,
        request_id=request.pk,
        order_id=request.order_id,
        kind=request.kind,
        attempts=attempts,
        reason=error,
    )
    logger.error(
        "isolated %s request %s of order %s on market %s after %s attempts: %s",
        request.kind,
        request.pk,
        request.order_id,
        market.code,
        attempts,
        error,
    )
