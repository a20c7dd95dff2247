"""Order operations for exchange and broker staff, outside any client's access.

Staff act on orders of accounts they hold no access to (a client on the phone, a
runaway algorithm, a market being wound down), so these services skip the trading
access check of ``oms.services`` and audit the staff user instead.
"""

from oms.errors import User
from oms.models import Order
from oms.services import order_cancel_queue


def order_cancel_by_staff(
    *, order: Order, acting_user: User, reason: str = ""
) -> Order:
    """Queue the cancel of an open order for its market's matching worker.

    Like ``order_cancel``: the cancel is carried out in arrival order by the worker
    and the order stays open until then; a repeated cancel of an order already being
    cancelled queues nothing more. Writes an audit record naming ``acting_user``.
    Raises ``OrderError`` ``order_not_open`` (409) for an order in a terminal state.

    Side effect on commit: wakes the market's matching worker.
    """
    return order_cancel_queue(
        order_id=order.pk,
        acting_user=acting_user,
        audit_reason=reason or "Cancelled by staff",
    )
