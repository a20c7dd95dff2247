"""Order operations for exchange and broker staff, outside any client's access.

Staff act on orders of accounts they hold no access to (a client on the phone, a
runaway algorithm, a market being wound down), so these services skip the trading
access check of ``oms.services`` and audit the staff user instead.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from exchange.wakeup import market_notify
from oms.models import OPEN_STATUSES, Order, OrderRequest
from oms.services import OrderError
from registry.services import audit_record


def order_cancel_by_staff(
    *, order: Order, acting_user: AbstractBaseUser, reason: str = ""
) -> Order:
    """Queue the cancel of an open order for its market's matching worker.

    Like ``order_cancel``: the cancel is carried out in arrival order by the worker
    and the order stays open until then; a repeated cancel of an order already being
    cancelled queues nothing more. Writes an audit record naming ``acting_user``.
    Raises ``OrderError`` ``order_not_open`` (409) for an order in a terminal state.

    Side effect on commit: wakes the market's matching worker.
    """
    with transaction.atomic(durable=True):
        order = (
            Order.objects.select_for_update(of=("self",))
            .select_related("market")
            .get(pk=order.pk)
        )
        if order.status not in OPEN_STATUSES:
            raise OrderError(
                "order_not_open", f"Order {order.pk} is {order.status}.", status=409
            )
        already = OrderRequest.objects.filter(
            order=order, kind=OrderRequest.Kind.CANCEL, processed_at__isnull=True
        ).exists()
        if not already:
            OrderRequest.objects.create(
                market_id=order.market_id,
                order=order,
                kind=OrderRequest.Kind.CANCEL,
                requested_by_id=acting_user.pk,
            )
            audit_record(
                actor=acting_user,
                action="order_cancel",
                target=order,
                reason=reason or "Cancelled by staff",
            )
            market_notify(order.market.code)
    return order
