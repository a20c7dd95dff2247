"""REST: the caller's accounts, their balances and holdings."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from registry.models import Account, AccountAccess, Asset, Balance
from registry.wire import balance_to_wire, holding_to_wire


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


class AccountViewSet(viewsets.ReadOnlyModelViewSet[Account]):
    serializer_class = AccountSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Account]:
        return accounts_of(self.request.user)

    def _balances(self, account: Account, kind: str) -> QuerySet[Balance]:
        return (
            Balance.objects.filter(account=account, asset__kind=kind)
            .select_related("asset")
            .order_by("asset__code")
        )

    @extend_schema(responses=BalanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def balances(self, request: Request, pk: str) -> Response:
        account = self.get_object()
        return Response(
            [balance_to_wire(b) for b in self._balances(account, Asset.Kind.CURRENCY)]
        )

    @extend_schema(responses=HoldingSerializer(many=True))
    @action(detail=True, methods=["get"])
    def holdings(self, request: Request, pk: str) -> Response:
        account = self.get_object()
        positions = self._balances(account, Asset.Kind.SECURITY)
        return Response([holding_to_wire(b) for b in positions if b.total])
