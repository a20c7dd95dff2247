"""Per-order working state of one batch."""

import logging
from dataclasses import dataclass, field
from decimal import Decimal

from exchange import engine
from exchange.models import Symbol
from oms.models import (
    Order,
    OrderEvent,
)

logger = logging.getLogger(__name__)


@dataclass
class _OrderState:
    order: Order
    events: list[OrderEvent] = field(default_factory=list)
    changed: bool = False
    entered_book: bool = False
    #: The order rests on the book (set from the stored status when loaded).
    on_book: bool = False
    #: It rested on the book before this batch.
    was_on_book: bool = False
    #: Amends of this order not yet applied (this batch's and later ones, counted
    #: under the order's row lock): while any is waiting, fills and re-checks free
    #: no cash (the amend may need what it raised the hold by).
    amends_waiting: int = 0
    #: Re-check the reservation against the order's needs at the end of the batch
    #: (its price or quantity changed).
    recheck_hold: bool = False

    def move(
        self,
        to_status: str,
        *,
        reason: str = "",
        acting_user_id: int | None = None,
        record: bool = False,
        **fill: object,
    ) -> None:
        if self.order.status != to_status or fill or record:
            self.events.append(
                OrderEvent(
                    order=self.order,
                    from_status=self.order.status,
                    to_status=to_status,
                    reason=reason,
                    acting_user_id=acting_user_id,
                    **fill,
                )
            )
        self.order.status = to_status
        if reason:
            self.order.status_reason = reason
        self.changed = True

    def note(self, reason: str, *, acting_user_id: int | None = None) -> None:
        """Record an event that changes neither the status nor its reason (a
        refused request of an order that already ended)."""
        status = self.order.status
        self.events.append(
            OrderEvent(
                order=self.order,
                from_status=status,
                to_status=status,
                reason=reason,
                acting_user_id=acting_user_id,
            )
        )
        self.changed = True


@dataclass
class _Fill:
    symbol: Symbol
    event: engine.Fill
    buy: _OrderState
    sell: _OrderState
    aggressor: str
    #: What the buy order still had to fill right after this fill (ledger postings
    #: are made after the whole batch has run, when the order may have moved on).
    buy_remaining: Decimal
