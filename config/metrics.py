"""``/metrics``: Prometheus metrics (django-prometheus), plus the matching workers'
figures read from the database.

The matching workers run in other processes (``run_matcher``), so the web process
cannot count their work in memory; this collector reads what they leave in the
database at every scrape: requests waiting per market and the age of the oldest,
isolated requests (an alert: each one is a request the worker gave up on), the
ownership epoch (takeovers) and whether some worker owns the market now.
"""

from collections.abc import Iterator
from datetime import datetime

from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.matching import market_owned
from exchange.models import IsolatedRequest, Market, MarketOwner
from oms.models import OrderRequest


class MatcherCollector:
    """Per-market matching figures, read from the database at each scrape."""

    def describe(self) -> list[Metric]:
        # Nothing to describe up front: registering must not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except DatabaseError:
            connection.close()  # a failed scrape reports nothing, never a 500

    def _collect(self) -> Iterator[Metric]:
        codes = dict(Market.objects.values_list("pk", "code"))
        now = timezone.now()
        waiting = GaugeMetricFamily(
            "xchange_matcher_requests_waiting",
            "Order requests not yet processed by the market's matcher.",
            labels=["market"],
        )
        oldest = GaugeMetricFamily(
            "xchange_matcher_oldest_request_age_seconds",
            "Age of the market's oldest unprocessed order request (0 if none).",
            labels=["market"],
        )
        inbox: dict[int, tuple[int, datetime | None]] = {
            row["market_id"]: (row["count"], row["oldest"])
            for row in OrderRequest.objects.filter(processed_at__isnull=True)
            .values("market_id")
            .annotate(count=Count("id"), oldest=Min("created_at"))
        }
        for pk, code in codes.items():
            count, first = inbox.get(pk, (0, None))
            waiting.add_metric([code], count)
            age = 0.0 if first is None else (now - first).total_seconds()
            oldest.add_metric([code], max(age, 0.0))
        yield waiting
        yield oldest
        yield from self._ownership(codes)

    def _ownership(self, codes: dict[int, str]) -> Iterator[Metric]:
        isolated = CounterMetricFamily(
            "xchange_matcher_isolated_requests",
            "Order requests the matcher isolated after they failed alone.",
            labels=["market"],
        )
        counts = dict(
            IsolatedRequest.objects.values_list("market_id").annotate(n=Count("id"))
        )
        epochs = dict(MarketOwner.objects.values_list("market_id", "epoch"))
        takeovers = CounterMetricFamily(
            "xchange_matcher_ownership_acquisitions",
            "Times a matcher took the market (the ownership epoch).",
            labels=["market"],
        )
        owned = GaugeMetricFamily(
            "xchange_matcher_owned",
            "1 if a matching worker owns the market now.",
            labels=["market"],
        )
        for pk, code in codes.items():
            isolated.add_metric([code], counts.get(pk, 0))
            takeovers.add_metric([code], epochs.get(pk, 0))
            owned.add_metric([code], 1 if market_owned(code) else 0)
        yield isolated
        yield takeovers
        yield owned


REGISTRY.register(MatcherCollector())
