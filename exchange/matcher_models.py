"""Records the matching workers keep about themselves: market ownership epochs and
requests isolated because they failed on their own (imported by ``exchange.models``).
"""

from django.db import models


class MarketOwner(models.Model):
    """The fencing token of a market's matching worker.

    A worker that takes the market's advisory lock bumps ``epoch``; every batch
    transaction locks this row and compares the epoch with the one its worker took,
    so a worker whose session was lost never persists a batch over a successor's.
    """

    market = models.OneToOneField(
        "exchange.Market", on_delete=models.CASCADE, related_name="owner"
    )
    epoch = models.BigIntegerField(default=0)
    #: Who holds the current epoch: ``host:pid:thread``, for operators.
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.market_id} epoch {self.epoch} ({self.holder})"


class IsolatedRequest(models.Model):
    """An order request the matching worker gave up on after it failed alone.

    The request itself is marked processed in the same transaction (and its order
    rejected, or the amend or cancel recorded as failed), so it no longer stalls
    the market. Append-only: an operator's record of what went wrong.
    """

    market = models.ForeignKey(
        "exchange.Market", on_delete=models.PROTECT, related_name="+"
    )
    #: ``oms.OrderRequest`` and ``oms.Order`` ids (no foreign key: ``exchange`` sits
    #: below ``oms``).
    request_id = models.BigIntegerField(unique=True)
    order_id = models.BigIntegerField()
    kind = models.CharField(max_length=8)
    attempts = models.PositiveIntegerField()
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} request {self.request_id}: {self.reason[:60]}"
