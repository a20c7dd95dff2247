"""Realtime scans: criteria over level-1 summaries, kept up to date as trades print.

A scan (``last > 10.50 and volume > 1000``, see :mod:`marketdata.scan_criteria`)
belongs to a user, or to everyone (a system scan, no owner, kept by staff in the
admin). A ranked scan (``limit`` set) keeps the best ``limit`` symbols by
``order_by`` among those meeting its criteria, ties broken by symbol id.

``Scan.matches`` holds the symbols matching at the last evaluation. After each
matching batch, :func:`scans_evaluate` (through the Celery task) re-evaluates the
symbols whose summary changed (ranked scans: re-ranks every summary), stores the
difference and, in the same transaction, advances the scan's stream ``scan.<id>``;
after commit it publishes ``{"added": [summary...], "removed": ["XSX:XS01"...]}``.
Every writer of matches holds the scans lock (see :func:`_scans_lock`), so
evaluations, creations and edits apply one after another to committed summaries.

The universe is the symbols that have a summary row (created by the matching
worker at a symbol's first book change or trade).
"""

import hashlib
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User as AuthUser
from django.db import connection, transaction
from django.db.models import Prefetch, Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from config.api import ApiError, PageNumberPagination
from config.auth import signed_in_user
from exchange.models import Symbol
from exchange.selectors import snapshot_transaction
from exchange.streams import (
    publish_on_commit,
    stream_advance,
    stream_current,
    stream_message,
)
from marketdata.models import Scan, SecuritySummary
from marketdata.prices import summary_to_wire
from marketdata.scan_criteria import (
    CriteriaError,
    Node,
    Values,
    criteria_evaluate,
    criteria_parse,
    ordering_parse,
    summary_values,
)
from marketdata.topics import Snapshot, register, unknown
from registry.services import RegistryError, User, audit_record

logger = logging.getLogger(__name__)

#: Each scan costs work in every evaluation, so a user keeps a bounded number.
MAX_SCANS_PER_USER = 20
MAX_LIMIT = 100

_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"xchange-scans").digest()[:8], "big", signed=True
)

Diff = tuple[list[int], list[int]]  # (added, removed) symbol ids


class ScanError(RegistryError):
    """A scan write that cannot be carried out; nothing was changed (``status`` is
    the HTTP status the API answers with)."""


def scan_topic(scan_id: int) -> str:
    return f"scan.{scan_id}"


# -- evaluation -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A symbol's summary (symbol, market, asset and currency loaded) and values."""

    summary: SecuritySummary
    values: Values

    @property
    def identifier(self) -> str:
        return self.summary.symbol.identifier


def _candidates(symbol_ids: Collection[int] | None) -> dict[int, _Candidate]:
    """The summaries of ``symbol_ids`` (None: every symbol), by symbol id."""
    summaries = SecuritySummary.objects.select_related(
        "symbol__market", "symbol__asset", "symbol__currency"
    )
    if symbol_ids is not None:
        summaries = summaries.filter(symbol_id__in=symbol_ids)
    return {s.symbol_id: _Candidate(s, summary_values(s)) for s in summaries}


SortKey = Callable[[str, Values | None], tuple[Any, ...]]


def _sort_key(order_by: str) -> SortKey:
    """Order by ``order_by`` (``-`` for descending), missing values last, then by
    symbol id; by symbol id alone without a valid ``order_by``."""
    try:
        field, is_descending = ordering_parse(order_by) if order_by else ("", False)
    except CriteriaError:
        field, is_descending = "", False

    def key(identifier: str, values: Values | None) -> tuple[Any, ...]:
        value = values[field] if field and values is not None else None
        if value is None:
            return (1, Decimal(0), identifier)
        return (0, -value if is_descending else value, identifier)

    return key


def _ordered(
    symbol_ids: Iterable[int], candidates: dict[int, _Candidate], key: SortKey
) -> list[int]:
    return sorted(
        symbol_ids,
        key=lambda sid: key(candidates[sid].identifier, candidates[sid].values),
    )


def _ranked(scan: Scan, node: Node, candidates: dict[int, _Candidate]) -> list[int]:
    """The top ``scan.limit`` symbols meeting the criteria, best first; a symbol
    without an ``order_by`` value cannot rank."""
    field = ordering_parse(scan.order_by)[0] if scan.order_by else ""
    meeting = [
        symbol_id
        for symbol_id, candidate in candidates.items()
        if criteria_evaluate(node, candidate.values)
        and (not field or candidate.values[field] is not None)
    ]
    return _ordered(meeting, candidates, _sort_key(scan.order_by))[: scan.limit]


def _scan_diff(
    scan: Scan,
    node: Node,
    stored: set[int],
    candidates: dict[int, _Candidate],
    changed: set[int] | None,
) -> Diff:
    """What to add to and remove from ``stored`` (the scan's matches): over the
    ``changed`` symbols only (None: all), or the whole ranking for a ranked scan.
    ``candidates`` covers every symbol considered. Added symbols come in the scan's
    order, removed ones unordered."""
    if scan.limit is not None:
        current = _ranked(scan, node, candidates)
        return [s for s in current if s not in stored], list(stored - set(current))
    scope = set(candidates) | stored if changed is None else changed
    matching = {
        symbol_id
        for symbol_id in scope
        if symbol_id in candidates
        and criteria_evaluate(node, candidates[symbol_id].values)
    }
    added = _ordered(matching - stored, candidates, _sort_key(scan.order_by))
    return added, list((stored & scope) - matching)


def _stored_matches(scan_ids: list[int]) -> dict[int, set[int]]:
    stored: dict[int, set[int]] = {scan_id: set() for scan_id in scan_ids}
    rows = Scan.matches.through.objects.filter(scan_id__in=scan_ids).values_list(
        "scan_id", "symbol_id"
    )
    for scan_id, symbol_id in rows:
        stored[scan_id].add(symbol_id)
    return stored


def _matches_write(scan_id: int, diff: Diff) -> None:
    added, removed = diff
    through = Scan.matches.through
    if removed:
        through.objects.filter(scan_id=scan_id, symbol_id__in=removed).delete()
    through.objects.bulk_create(
        [through(scan_id=scan_id, symbol_id=symbol_id) for symbol_id in added]
    )


def _publish(diffs: dict[int, Diff], candidates: dict[int, _Candidate]) -> None:
    """Advance the streams of the scans in ``diffs`` and publish their changes
    after commit. Inside the transaction that stored the changes."""
    if not diffs:
        return
    next_seq = stream_advance({scan_topic(scan_id): 1 for scan_id in diffs})
    missing = {s for _, removed in diffs.values() for s in removed} - set(candidates)
    others = Symbol.objects.select_related("market").in_bulk(missing)
    messages = []
    for scan_id in sorted(diffs):
        added, removed = diffs[scan_id]
        topic = scan_topic(scan_id)
        data = {
            "added": [
                summary_to_wire(candidates[s].summary, candidates[s].summary.symbol)
                for s in added
            ],
            "removed": sorted(
                candidates[s].identifier if s in candidates else others[s].identifier
                for s in removed
            ),
        }
        messages.append(stream_message(topic, next_seq[topic], data))
    publish_on_commit(messages)


def _scans_lock() -> None:
    """Serialise the writers of scan matches until the transaction ends.

    A transaction-level advisory lock on PostgreSQL, taken first (before any
    stream sequence): each evaluation, creation or edit starts once the previous
    one has committed, so it compares against the matches that one stored and reads
    the summaries (and scans) committed by then.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def _criteria_of(scan: Scan) -> Node | None:
    try:
        if scan.order_by:
            ordering_parse(scan.order_by)
        return criteria_parse(scan.criteria)
    except CriteriaError as error:  # stored by hand past the validation
        logger.error("scan %s cannot be evaluated: %s", scan.pk, error)
        return None


def scans_evaluate(*, symbol_ids: Iterable[int]) -> int:
    """Bring every scan's matches up to date after the summaries of
    ``symbol_ids`` changed; returns the number of scans whose matches changed.

    Idempotent: a second run finds nothing to change and publishes nothing.
    Side effects: for each changed scan, advances ``scan.<id>`` and, on commit,
    publishes ``{"added": [summary wire...], "removed": [symbol id...]}``. A scan
    whose stored criteria do not parse is logged and skipped.
    """
    changed = set(symbol_ids)
    if not changed:
        return 0
    with transaction.atomic(durable=True):
        _scans_lock()
        scans = list(Scan.objects.order_by("pk"))
        is_ranking = any(scan.limit is not None for scan in scans)
        candidates = _candidates(None if is_ranking else changed)
        stored = _stored_matches([scan.pk for scan in scans])
        diffs: dict[int, Diff] = {}
        for scan in scans:
            node = _criteria_of(scan)
            if node is None:
                continue
            diff = _scan_diff(scan, node, stored[scan.pk], candidates, changed)
            if diff[0] or diff[1]:
                _matches_write(scan.pk, diff)
                diffs[scan.pk] = diff
        _publish(diffs, candidates)
    return len(diffs)


# -- writes ---------------------------------------------------------------------------


def _validated(name: str, criteria: str, order_by: str, limit: int | None) -> Node:
    if not name.strip():
        raise ScanError("A scan needs a name.", code="blank", field="name")
    try:
        node = criteria_parse(criteria)
    except CriteriaError as error:
        raise ScanError(
            error.message, code="invalid_criteria", field="criteria"
        ) from error
    if order_by:
        try:
            ordering_parse(order_by)
        except CriteriaError as error:
            raise ScanError(
                error.message, code="invalid_order_by", field="order_by"
            ) from error
    if limit is not None and not (order_by and 1 <= limit <= MAX_LIMIT):
        raise ScanError(
            f"A limit is from 1 to {MAX_LIMIT} and needs an order_by.",
            code="invalid_limit",
            field="limit",
        )
    return node


def scan_create(
    *,
    owner: AuthUser | None,
    name: str,
    criteria: str,
    order_by: str = "",
    limit: int | None = None,
    acting_user: User,
) -> Scan:
    """Create ``owner``'s scan (a system scan if None) with its current matches.

    Raises :class:`ScanError` (nothing stored): ``blank`` name,
    ``invalid_criteria``, ``invalid_order_by``, ``invalid_limit``, or
    ``too_many_scans`` (409) past :data:`MAX_SCANS_PER_USER`. Nothing is
    published: nobody can subscribe to a scan before it exists.
    """
    node = _validated(name, criteria, order_by, limit)
    with transaction.atomic():
        _scans_lock()
        if owner is not None and (
            Scan.objects.filter(owner=owner).count() >= MAX_SCANS_PER_USER
        ):
            raise ScanError(
                f"A user keeps at most {MAX_SCANS_PER_USER} scans.",
                code="too_many_scans",
                status=409,
            )
        scan = Scan.objects.create(
            owner=owner, name=name, criteria=criteria, order_by=order_by, limit=limit
        )
        _matches_write(scan.pk, _scan_diff(scan, node, set(), _candidates(None), None))
        audit_record(
            actor=acting_user,
            action="scan_create",
            target=scan,
            changes={
                "name": name,
                "criteria": criteria,
                "order_by": order_by,
                "limit": limit,
            },
        )
    return scan


def scan_update(
    *,
    scan: Scan,
    name: str,
    criteria: str,
    order_by: str,
    limit: int | None,
    acting_user: User,
) -> Scan:
    """Change a scan (the admin edits system scans this way) and re-evaluate it over
    every summary. Raises as :func:`scan_create`. Side effects: audited; publishes
    the change of matches on ``scan.<id>`` after commit. Returns the saved scan."""
    node = _validated(name, criteria, order_by, limit)
    with transaction.atomic():
        _scans_lock()
        scan = Scan.objects.get(pk=scan.pk)
        new = {"name": name, "criteria": criteria, "order_by": order_by, "limit": limit}
        changes = {
            field: [getattr(scan, field), value]
            for field, value in new.items()
            if getattr(scan, field) != value
        }
        if not changes:
            return scan
        for field, value in new.items():
            setattr(scan, field, value)
        scan.save(update_fields=list(changes))
        candidates = _candidates(None)
        stored = _stored_matches([scan.pk])[scan.pk]
        diff = _scan_diff(scan, node, stored, candidates, None)
        if diff[0] or diff[1]:
            _matches_write(scan.pk, diff)
            _publish({scan.pk: diff}, candidates)
        audit_record(
            actor=acting_user, action="scan_change", target=scan, changes=changes
        )
    return scan


def scan_delete(*, scan: Scan, acting_user: User) -> None:
    """Delete a scan, audited. Its subscribers simply get no more updates."""
    with transaction.atomic():
        _scans_lock()
        audit_record(
            actor=acting_user,
            action="scan_delete",
            target=scan,
            changes={"name": scan.name, "criteria": scan.criteria},
        )
        scan.delete()


# -- reads ----------------------------------------------------------------------------


def scans_loaded() -> QuerySet[Scan]:
    """Scans with their matched symbols (market and summary loaded)."""
    symbols = Symbol.objects.select_related("market", "summary")
    return Scan.objects.prefetch_related(Prefetch("matches", queryset=symbols))


def scans_visible(*, user: Any) -> QuerySet[Scan]:
    """The user's own scans and the system scans, by name (anonymous: system)."""
    is_signed_in = user is not None and user.is_authenticated
    mine = Q(owner_id=user.pk) if is_signed_in else Q(pk__in=[])
    return scans_loaded().filter(mine | Q(owner__isnull=True)).order_by("name", "id")


def scan_visible(*, user: Any, scan_id: str) -> Scan | None:
    """The scan with id ``scan_id`` (text, as in a URL or topic) if ``user`` may
    see it: their own or a system scan."""
    if not (scan_id.isascii() and scan_id.isdigit() and len(scan_id) < 19):
        return None
    return scans_visible(user=user).filter(pk=int(scan_id)).first()


def _matched(scan: Scan) -> list[tuple[Symbol, SecuritySummary | None]]:
    """The scan's matches in its order (``matches`` prefetched or not)."""
    key = _sort_key(scan.order_by)
    rows = []
    for symbol in scan.matches.all():
        summary = getattr(symbol, "summary", None)
        values = None if summary is None else summary_values(summary)
        rows.append((key(symbol.identifier, values), symbol, summary))
    rows.sort(key=lambda row: row[0])
    return [(symbol, summary) for _, symbol, summary in rows]


def scan_to_wire(scan: Scan) -> dict[str, Any]:
    """The REST shape; ``matches`` are symbol ids in the scan's order."""
    return {
        "id": scan.pk,
        "name": scan.name,
        "criteria": scan.criteria,
        "is_system": scan.owner_id is None,
        "order_by": scan.order_by,
        "limit": scan.limit,
        "matches": [symbol.identifier for symbol, _ in _matched(scan)],
    }


def scan_snapshot(scan: Scan) -> dict[str, Any]:
    """The scan with its matches as summaries, and the ``scan.<id>`` sequence they
    reflect (read in one snapshot)."""
    topic = scan_topic(scan.pk)
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        symbols = Symbol.objects.select_related(
            "market", "asset", "currency", "summary"
        )
        scan = Scan.objects.prefetch_related(Prefetch("matches", queryset=symbols)).get(
            pk=scan.pk
        )
        matched = _matched(scan)
    return {
        "seq": seq,
        **scan_to_wire(scan),
        "matches": [
            summary_to_wire(summary or SecuritySummary(symbol=symbol), symbol)
            for symbol, summary in matched
        ],
    }


# -- REST -----------------------------------------------------------------------------


class ScanWriteSerializer(serializers.Serializer[Any]):
    """``POST /api/v1/scans``; the criteria are checked by the parser (so a bad or
    too long text is ``invalid_criteria``, not a generic length error)."""

    name = serializers.CharField(max_length=100)
    criteria = serializers.CharField(allow_blank=True)
    order_by = serializers.CharField(
        max_length=40, required=False, allow_blank=True, default=""
    )
    limit = serializers.IntegerField(required=False, allow_null=True, default=None)


class ScanSerializer(serializers.Serializer[Scan]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    criteria = serializers.CharField()
    is_system = serializers.BooleanField()
    order_by = serializers.CharField()
    limit = serializers.IntegerField(allow_null=True)
    matches = serializers.ListField(child=serializers.CharField())

    def to_representation(self, instance: Scan) -> dict[str, Any]:
        return scan_to_wire(instance)


class ScanViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Scan]
):
    """The caller's scans and the system scans; writes only to the caller's own."""

    serializer_class = ScanSerializer
    pagination_class = PageNumberPagination
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[Scan]:
        return scans_visible(user=self.request.user)

    def get_object(self) -> Scan:
        scan_id = self.kwargs["pk"]
        scan = scan_visible(user=self.request.user, scan_id=scan_id)
        if scan is None:
            raise ApiError(
                "scan_not_found", f"There is no scan {scan_id}.", status_code=404
            )
        return scan

    @extend_schema(request=ScanWriteSerializer, responses={201: ScanSerializer})
    def create(self, request: Request) -> Response:
        body = ScanWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        scan = scan_create(
            owner=signed_in_user(request),
            **body.validated_data,
            acting_user=request.user,
        )
        return Response(
            scan_to_wire(scans_loaded().get(pk=scan.pk)),
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        scan = self.get_object()
        if scan.owner_id is None:
            raise ScanError(
                "System scans are read-only.", code="scan_read_only", status=403
            )
        scan_delete(scan=scan, acting_user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


router = SimpleRouter(trailing_slash=False)
router.register("scans", ScanViewSet, basename="scan")
urlpatterns = router.urls


# -- stream topic ---------------------------------------------------------------------


class ScanTopic:
    """``scan.<id>`` (the user's own or a system scan): the matches as summaries,
    then ``{"added": [...], "removed": [...]}`` updates."""

    def _scan(self, user: Any, argument: str) -> Scan:
        scan = scan_visible(user=user, scan_id=argument)
        if scan is None:
            raise unknown(f"scan.{argument}")
        return scan

    def upstreams(self, user: Any, argument: str) -> list[str]:
        return [scan_topic(self._scan(user, argument).pk)]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        try:
            data = scan_snapshot(self._scan(user, argument))
        except Scan.DoesNotExist as error:  # deleted a moment ago
            raise unknown(f"scan.{argument}") from error
        return Snapshot(seq=data.pop("seq"), data=data)


register("scan", ScanTopic())
