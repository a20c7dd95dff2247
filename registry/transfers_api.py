"""REST: transfers (withdrawals, deposits, security issues and transfers).

Clients request and cancel withdrawals of their accounts and read their accounts'
transfers; staff users and integration tokens (acting as their owning staff user)
deposit, issue and move securities, read every transfer and approve or reject
withdrawals. Every transfer request needs an idempotency key: the
``Idempotency-Key`` header or an ``idempotency_key`` body field. A replay answers
``200`` with the original transfer instead of ``201``.
"""

from typing import Any

from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ApiError
from config.fields import DecimalStringField
from registry.api import accounts_of
from registry.models import Account, Asset, Transfer
from registry.services import RegistryError
from registry.transfers import (
    MAX_KEY_LENGTH,
    TransferResult,
    cash_deposit,
    security_issue,
    security_transfer,
    withdrawal_approve,
    withdrawal_cancel,
    withdrawal_reject,
    withdrawal_request,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Required unless the body has idempotency_key; unique per user.",
)


def transfer_to_wire(transfer: Transfer, *, show_users: bool = False) -> dict[str, Any]:
    """A transfer as JSON; ``asset`` must be loaded. Staff also see who requested
    and who decided (``show_users``)."""
    asset = transfer.asset
    data: dict[str, Any] = {
        "id": transfer.pk,
        "kind": transfer.kind,
        "status": transfer.status,
        "account": transfer.account_id,
        "counterparty": transfer.counterparty_id,
        "asset": asset.code,
        "amount": str(asset.quantize(transfer.amount)),
        "memo": transfer.memo,
        "decision_reason": transfer.decision_reason,
        "idempotency_key": transfer.idempotency_key,
        "created_at": transfer.created_at.isoformat(),
        "decided_at": transfer.decided_at.isoformat() if transfer.decided_at else None,
    }
    if show_users:
        data["requested_by"] = _username(transfer.requested_by)
        data["decided_by"] = _username(transfer.decided_by)
    return data


def _username(user: Any) -> str | None:
    return None if user is None else user.get_username()


class TransferSerializer(serializers.Serializer[Transfer]):
    """A transfer as every endpoint returns it (staff also get the two users)."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices)
    status = serializers.ChoiceField(choices=Transfer.Status.choices)
    account = serializers.IntegerField()
    counterparty = serializers.IntegerField(allow_null=True)
    asset = serializers.CharField()
    amount = serializers.CharField()
    memo = serializers.CharField()
    decision_reason = serializers.CharField()
    idempotency_key = serializers.CharField()
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    requested_by = serializers.CharField(allow_null=True, required=False)
    decided_by = serializers.CharField(allow_null=True, required=False)


class IsStaff(permissions.BasePermission):
    """Staff users, or integration tokens whose owning user is staff."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_staff)


def _is_staff(request: Request) -> bool:
    return bool(request.user and request.user.is_staff)


def _response(request: Request, result: TransferResult) -> Response:
    return Response(
        transfer_to_wire(result.transfer, show_users=_is_staff(request)),
        status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
    )


# Request bodies ---------------------------------------------------------------------


def idempotency_key_of(request: Request, body: serializers.Serializer[Any]) -> str:
    """The key from the ``Idempotency-Key`` header or the body's ``idempotency_key``
    (both: they must agree). Raises ``idempotency_key_required`` or
    ``idempotency_key_mismatch`` (400)."""
    header = request.headers.get("Idempotency-Key", "")
    field = body.validated_data.get("idempotency_key", "")
    if header and field and header != field:
        raise ApiError(
            "idempotency_key_mismatch",
            "The Idempotency-Key header and the idempotency_key field differ.",
            field="idempotency_key",
        )
    key = header or field
    if not key:
        raise ApiError(
            "idempotency_key_required",
            "Send an Idempotency-Key header (or an idempotency_key field).",
            field="idempotency_key",
        )
    return key


class _TransferBody(serializers.Serializer[Any]):
    """Fields every transfer request shares."""

    asset = serializers.CharField(max_length=40, required=False)
    amount = DecimalStringField(max_places=10, max_whole_digits=20)
    idempotency_key = serializers.CharField(
        max_length=MAX_KEY_LENGTH, required=False, allow_blank=False
    )

    def asset_or(self, default: Asset) -> Asset:
        code = self.validated_data.get("asset")
        return default if code is None else asset_by_code(code)


class WithdrawalBody(_TransferBody):
    """``POST /accounts/{id}/withdrawals``: ``asset`` defaults to the account's."""

    memo = serializers.CharField(max_length=200, required=False, allow_blank=True)


class DepositBody(_TransferBody):
    """``POST /accounts/{id}/deposits``: ``asset`` defaults to the account's."""

    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


class SecuritiesBody(serializers.Serializer[Any]):
    """``POST /transfers/securities``: without ``from_account``, an issue."""

    from_account = serializers.IntegerField(min_value=1, required=False)
    to_account = serializers.IntegerField(min_value=1)
    asset = serializers.CharField(max_length=40)
    quantity = DecimalStringField(max_places=10, max_whole_digits=20)
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)
    idempotency_key = serializers.CharField(
        max_length=MAX_KEY_LENGTH, required=False, allow_blank=False
    )


class DecisionBody(serializers.Serializer[Any]):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)


def asset_by_code(code: str) -> Asset:
    asset = Asset.objects.filter(code=code).first()
    if asset is None:
        raise ApiError("unknown_asset", f"There is no asset {code!r}.", field="asset")
    return asset


def _account_in_path(pk: int) -> Account:
    account = Account.objects.select_related("currency").filter(pk=pk).first()
    if account is None:
        raise ApiError(
            "account_not_found",
            f"There is no account {pk}.",
            status_code=404,
            field="account",
        )
    return account


def _account_in_body(pk: int, field: str) -> Account:
    account = Account.objects.select_related("currency").filter(pk=pk).first()
    if account is None:
        raise ApiError("unknown_account", f"There is no account {pk}.", field=field)
    return account


# Account-scoped endpoints -----------------------------------------------------------


class AccountWithdrawalsView(APIView):
    """``POST /accounts/{id}/withdrawals``: an owner or trader requests a withdrawal."""

    @extend_schema(
        request=WithdrawalBody,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: OpenApiResponse(TransferSerializer, "The pending withdrawal"),
            200: OpenApiResponse(TransferSerializer, "Replay: the original"),
        },
    )
    def post(self, request: Request, account_id: int) -> Response:
        account = accounts_of(request.user).filter(pk=account_id).first()
        if account is None:
            raise ApiError(
                "account_not_found",
                f"There is no account {account_id}.",
                status_code=404,
                field="account",
            )
        body = WithdrawalBody(data=request.data)
        body.is_valid(raise_exception=True)
        key = idempotency_key_of(request, body)
        result = withdrawal_request(
            account=account,
            asset=body.asset_or(account.currency),
            amount=body.validated_data["amount"],
            acting_user=request.user,
            idempotency_key=key,
            memo=body.validated_data.get("memo", ""),
        )
        return _response(request, result)


class AccountDepositsView(APIView):
    """``POST /accounts/{id}/deposits``: staff or an integration credits cash."""

    permission_classes = [IsStaff]

    @extend_schema(
        request=DepositBody,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: OpenApiResponse(TransferSerializer, "The completed deposit"),
            200: OpenApiResponse(TransferSerializer, "Replay: the original"),
        },
    )
    def post(self, request: Request, account_id: int) -> Response:
        account = _account_in_path(account_id)
        body = DepositBody(data=request.data)
        body.is_valid(raise_exception=True)
        key = idempotency_key_of(request, body)
        result = cash_deposit(
            account=account,
            asset=body.asset_or(account.currency),
            amount=body.validated_data["amount"],
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
            idempotency_key=key,
        )
        return _response(request, result)


TRANSFER_FILTERS = {
    "account": ["exact"],
    "kind": ["exact", "in"],
    "status": ["exact", "in"],
}


def transfers_visible_to(user: Any) -> QuerySet[Transfer]:
    """Staff see every transfer; others those of (or to) accounts they can see."""
    transfers = Transfer.objects.select_related("asset", "requested_by", "decided_by")
    if user.is_staff:
        return transfers
    visible = accounts_of(user).values("pk")
    return transfers.filter(Q(account__in=visible) | Q(counterparty__in=visible))


class AccountTransfersView(ListAPIView):
    """``GET /accounts/{id}/transfers``: the account's transfers, newest first."""

    serializer_class = TransferSerializer
    filterset_fields = {"kind": ["exact", "in"], "status": ["exact", "in"]}

    def get_queryset(self) -> QuerySet[Transfer]:
        if getattr(self, "swagger_fake_view", False):
            return Transfer.objects.none()
        account_id = self.kwargs["account_id"]
        user = self.request.user
        accounts = Account.objects.all() if user.is_staff else accounts_of(user)
        if not accounts.filter(pk=account_id).exists():
            raise ApiError(
                "account_not_found",
                f"There is no account {account_id}.",
                status_code=404,
                field="account",
            )
        return Transfer.objects.select_related(
            "asset", "requested_by", "decided_by"
        ).filter(Q(account_id=account_id) | Q(counterparty_id=account_id))

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        staff = _is_staff(request)
        return self.get_paginated_response(
            [transfer_to_wire(t, show_users=staff) for t in page or []]
        )


# /transfers -----------------------------------------------------------------------


class TransferViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Transfer]
):
    """Read transfers; staff approve or reject withdrawals and move securities;
    clients cancel their pending withdrawals."""

    filterset_fields = TRANSFER_FILTERS
    lookup_value_regex = r"\d+"

    serializer_class = TransferSerializer

    def get_queryset(self) -> QuerySet[Transfer]:
        if getattr(self, "swagger_fake_view", False):
            return Transfer.objects.none()
        return transfers_visible_to(self.request.user)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        staff = _is_staff(request)
        return self.get_paginated_response(
            [transfer_to_wire(t, show_users=staff) for t in page or []]
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(
            transfer_to_wire(self.get_object(), show_users=_is_staff(request))
        )

    def _decided(self, request: Request, transfer: Transfer) -> Response:
        transfer = self.get_queryset().get(pk=transfer.pk)
        return Response(transfer_to_wire(transfer, show_users=_is_staff(request)))

    @extend_schema(request=DecisionBody, responses=TransferSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def approve(self, request: Request, pk: str) -> Response:
        body = DecisionBody(data=request.data)
        body.is_valid(raise_exception=True)
        transfer = withdrawal_approve(
            transfer_id=int(pk),
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        return self._decided(request, transfer)

    @extend_schema(request=DecisionBody, responses=TransferSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def reject(self, request: Request, pk: str) -> Response:
        body = DecisionBody(data=request.data)
        body.is_valid(raise_exception=True)
        transfer = withdrawal_reject(
            transfer_id=int(pk),
            acting_user=request.user,
            reason=body.validated_data.get("reason", ""),
        )
        return self._decided(request, transfer)

    @extend_schema(request=None, responses=TransferSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        transfer = withdrawal_cancel(transfer_id=int(pk), acting_user=request.user)
        return self._decided(request, transfer)

    @extend_schema(
        request=SecuritiesBody,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: OpenApiResponse(TransferSerializer, "The completed transfer"),
            200: OpenApiResponse(TransferSerializer, "Replay: the original"),
        },
    )
    @action(detail=False, methods=["post"], permission_classes=[IsStaff])
    def securities(self, request: Request) -> Response:
        body = SecuritiesBody(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        key = idempotency_key_of(request, body)
        asset = asset_by_code(data["asset"])
        to_account = _account_in_body(data["to_account"], "to_account")
        try:
            result = self._move_securities(request, data, asset, to_account, key)
        except RegistryError as error:
            # The body names the amount "quantity".
            if error.field == "amount":
                error.field = "quantity"
            raise
        return _response(request, result)

    def _move_securities(
        self,
        request: Request,
        data: dict[str, Any],
        asset: Asset,
        to_account: Account,
        key: str,
    ) -> TransferResult:
        if "from_account" not in data:
            return security_issue(
                account=to_account,
                asset=asset,
                amount=data["quantity"],
                acting_user=request.user,
                reason=data.get("reason", ""),
                idempotency_key=key,
            )
        return security_transfer(
            from_account=_account_in_body(data["from_account"], "from_account"),
            to_account=to_account,
            asset=asset,
            amount=data["quantity"],
            acting_user=request.user,
            reason=data.get("reason", ""),
            idempotency_key=key,
        )
