"""REST: the caller's accounts, their balances, holdings, transactions and
statements, now or as at any past instant."""

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ApiError, CursorPagination
from registry.models import Account, AccountAccess, Asset, Balance, JournalEntry
from registry.selectors import account_postings, positions_as_at, running_figures
from registry.statements import (
    account_statement,
    day_end,
    day_start,
    descriptions,
    statement_csv,
    statement_filename,
    statement_html,
    statement_to_wire,
)
from registry.wire import balance_to_wire, holding_to_wire, transaction_to_wire

STATEMENT_FORMATS = ("json", "csv", "html")


def parse_instant(value: str, *, field: str) -> datetime:
    """An ISO 8601 date-time with a UTC offset (``Z`` or ``+10:00``).

    A ``+`` sent unencoded in a query string arrives as a space; it is read back
    as ``+``. Raises ``ApiError`` ``invalid_time`` (400) naming ``field``.
    """
    text = value.strip()
    moment = _parse_datetime(text)
    if moment is None and " " in text:
        moment = _parse_datetime(text.replace(" ", "+"))
    if moment is None or moment.tzinfo is None:
        raise ApiError(
            "invalid_time",
            f"{field} must be an ISO 8601 date-time with a UTC offset, "
            "e.g. 2026-03-31T16:00:00+11:00.",
            field=field,
        )
    return moment


def _parse_datetime(text: str) -> datetime | None:
    try:
        return parse_datetime(text)
    except ValueError:  # well-formed but impossible, e.g. month 13
        return None


def as_at_param(request: Request) -> datetime | None:
    """``?as_at=``: None if absent; an aware instant not in the future.

    Raises ``ApiError`` ``invalid_time`` or ``as_at_in_future`` (400)."""
    value = request.query_params.get("as_at")
    if value is None:
        return None
    moment = parse_instant(value, field="as_at")
    if moment > timezone.now():
        raise ApiError(
            "as_at_in_future",
            "as_at is in the future: the ledger only knows the past.",
            field="as_at",
        )
    return moment


def period_bound(value: str, *, field: str, end: bool) -> datetime:
    """A statement bound: an ISO date-time with an offset, or a date (a whole day in
    the server's time zone: its first instant for ``from``, its last for ``to``)."""
    day = _parse_date(value.strip())
    if day is None:
        return parse_instant(value, field=field)
    return day_end(day) if end else day_start(day)


def _parse_date(text: str) -> date | None:
    try:
        return parse_date(text)
    except ValueError:
        return None


class _JsonOnlyNegotiation(DefaultContentNegotiation):
    """Ignore DRF's ``?format=`` override: the statement view reads ``format``
    itself and answers CSV and HTML as plain Django responses."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class AccountSerializer(serializers.ModelSerializer[Account]):
    currency = serializers.CharField(source="currency.code")
    role = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = ["id", "number", "name", "currency", "status", "role"]

    def get_role(self, account: Account) -> str:
        return str(getattr(account, "caller_role", ""))


class BalanceSerializer(serializers.Serializer[Any]):
    asset = serializers.CharField()
    available = serializers.CharField()
    held = serializers.CharField()
    unsettled = serializers.CharField()
    total = serializers.CharField()


class HoldingSerializer(serializers.Serializer[Any]):
    symbol = serializers.CharField()
    quantity = serializers.CharField()
    available = serializers.CharField()
    held = serializers.CharField()
    unsettled = serializers.CharField()
    average_cost = serializers.CharField()
    cost = serializers.CharField()


def accounts_of(user: Any) -> QuerySet[Account]:
    """The accounts ``user`` may see, each annotated with the user's ``caller_role``."""
    from django.db.models import OuterRef, Subquery

    role = AccountAccess.objects.filter(account=OuterRef("pk"), user_id=user.pk).values(
        "role"
    )[:1]
    return (
        Account.objects.filter(access__user_id=user.pk)
        .select_related("currency")
        .annotate(caller_role=Subquery(role))
        .order_by("number")
    )


class TransactionSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    entry = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=JournalEntry.Kind.choices)
    reference = serializers.CharField()
    reason = serializers.CharField()
    description = serializers.CharField()
    asset = serializers.CharField()
    bucket = serializers.CharField()
    amount = serializers.CharField()
    balance = serializers.CharField()
    total = serializers.CharField()
    cost_delta = serializers.CharField(allow_null=True)
    cost = serializers.CharField(allow_null=True)


AS_AT = OpenApiParameter(
    "as_at",
    OpenApiTypes.DATETIME,
    description="ISO 8601 date-time with an offset: the figures as at that instant "
    "(entries created at or before it)",
)


class AccountViewSet(viewsets.ReadOnlyModelViewSet[Account]):
    serializer_class = AccountSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Account]:
        return accounts_of(self.request.user)

    def _positions(self, request: Request, kind: str) -> list[Balance]:
        account = self.get_object()
        as_at = as_at_param(request)
        if as_at is not None:
            return positions_as_at(account=account, as_at=as_at, asset_kind=kind)
        return list(
            Balance.objects.filter(account=account, asset__kind=kind)
            .select_related("asset")
            .order_by("asset__code")
        )

    @extend_schema(parameters=[AS_AT], responses=BalanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def balances(self, request: Request, pk: str) -> Response:
        """Cash positions, now or ``as_at`` a past instant (derived from the
        postings; an asset is listed once the account has a posting in it)."""
        positions = self._positions(request, Asset.Kind.CURRENCY)
        return Response([balance_to_wire(b) for b in positions])

    @extend_schema(parameters=[AS_AT], responses=HoldingSerializer(many=True))
    @action(detail=True, methods=["get"])
    def holdings(self, request: Request, pk: str) -> Response:
        """Security positions with a quantity, now or ``as_at`` a past instant,
        with their average cost and cost base at that time."""
        positions = self._positions(request, Asset.Kind.SECURITY)
        return Response([holding_to_wire(b) for b in positions if b.total])

    @extend_schema(
        parameters=[
            AS_AT,
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="inclusive"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="exclusive"),
            OpenApiParameter("asset", str, description="asset code, e.g. AUD"),
            OpenApiParameter("kind", str, enum=JournalEntry.Kind.values),
        ],
        responses=TransactionSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def transactions(self, request: Request, pk: str) -> Response:
        """The account's ledger lines, newest first, cursor-paged, each with the
        running balance of its bucket, the asset's total and the cost base right
        after it. Raises 400 ``invalid_time``, ``as_at_in_future``,
        ``unknown_asset``, ``invalid_kind``."""
        account = self.get_object()
        postings = self._transactions_filtered(
            request, account_postings(account=account, as_at=as_at_param(request))
        ).select_related("entry", "asset")
        paginator = CursorPagination()
        page = paginator.page_of(postings, request, view=self)
        figures = running_figures(account=account, posting_ids=[p.pk for p in page])
        texts = descriptions(account, {p.entry_id: p.entry for p in page}.values())
        return paginator.get_paginated_response(
            [
                transaction_to_wire(
                    posting,
                    balance=figures[posting.pk].balance,
                    total=figures[posting.pk].total,
                    cost=figures[posting.pk].cost,
                    description=texts[posting.entry_id],
                )
                for posting in page
            ]
        )

    @staticmethod
    def _transactions_filtered(request: Request, postings: QuerySet[Any]) -> Any:
        params = request.query_params
        if "from" in params:
            start = parse_instant(params["from"], field="from")
            postings = postings.filter(entry__created_at__gte=start)
        if "to" in params:
            end = parse_instant(params["to"], field="to")
            postings = postings.filter(entry__created_at__lt=end)
        if "asset" in params:
            asset = Asset.objects.filter(code=params["asset"]).first()
            if asset is None:
                raise ApiError(
                    "unknown_asset",
                    f"There is no asset {params['asset']!r}.",
                    field="asset",
                )
            postings = postings.filter(asset=asset)
        if "kind" in params:
            if params["kind"] not in JournalEntry.Kind.values:
                raise ApiError(
                    "invalid_kind",
                    f"kind must be one of {', '.join(JournalEntry.Kind.values)}.",
                    field="kind",
                )
            postings = postings.filter(entry__kind=params["kind"])
        return postings

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from", str, required=True, description="ISO date or date-time"
            ),
            OpenApiParameter(
                "to", str, required=True, description="ISO date or date-time"
            ),
            OpenApiParameter("format", str, enum=list(STATEMENT_FORMATS)),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(
        detail=True, methods=["get"], content_negotiation_class=_JsonOnlyNegotiation
    )
    def statement(self, request: Request, pk: str) -> Response | HttpResponse:
        """The account's statement for [from, to] as JSON, a CSV download or a
        printable HTML page. A date covers its whole day (server time zone); a
        ``to`` in the future is cut at now. Raises 400 ``invalid_time``,
        ``required``, ``invalid_period``, ``invalid_format``."""
        account = self.get_object()
        start, end, output = statement_params(request)
        statement = account_statement(account=account, start=start, end=end)
        if output == "csv":
            response = HttpResponse(
                statement_csv(statement), content_type="text/csv; charset=utf-8"
            )
            name = statement_filename(statement, "csv")
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        if output == "html":
            return HttpResponse(
                statement_html(statement), content_type="text/html; charset=utf-8"
            )
        return Response(statement_to_wire(statement))


def statement_params(request: Request) -> tuple[datetime, datetime, str]:
    """(start, end, format) of a statement request; ``end`` cut at now."""
    params = request.query_params
    output = params.get("format", "json")
    if output not in STATEMENT_FORMATS:
        raise ApiError(
            "invalid_format", "format must be json, csv or html.", field="format"
        )
    bounds = []
    for name, is_end in (("from", False), ("to", True)):
        if not params.get(name):
            raise ApiError("required", f"{name} is required.", field=name)
        bounds.append(period_bound(params[name], field=name, end=is_end))
    start, end = bounds
    now = timezone.now()
    if start > end or start > now:
        raise ApiError(
            "invalid_period",
            "from must not be after to, nor in the future.",
            field="from",
        )
    return start, min(end, now), output
