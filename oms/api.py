"""REST: place, list, read and cancel orders."""

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.fields import DecimalStringField
from oms.estimate import estimate_to_wire, order_estimate
from oms.models import Order, OrderStatus
from oms.services import (
    AmendSpec,
    OrderSpec,
    default_time_in_force,
    order_amend,
    order_cancel,
    order_cancel_all,
    order_place,
)
from oms.wire import order_to_wire


class OrderRequestSerializer(serializers.Serializer[Any]):
    """The body of ``POST /api/v1/orders`` (and ``/orders/estimate``)."""

    account = serializers.IntegerField(min_value=1)
    symbol = serializers.CharField(max_length=40)
    side = serializers.ChoiceField(choices=Order.Side.choices)
    type = serializers.ChoiceField(choices=Order.Type.choices, default=Order.Type.LIMIT)
    time_in_force = serializers.ChoiceField(
        choices=Order.TimeInForce.choices, required=False
    )
    # The bounds of the NUMERIC columns: Order.price (20, 8) and quantity (30, 10).
    price = DecimalStringField(required=False, allow_null=True, max_whole_digits=12)
    quantity = DecimalStringField(max_places=10, max_whole_digits=20)
    client_order_id = serializers.CharField(
        max_length=64, required=False, allow_blank=False
    )
    stop_price = DecimalStringField(
        required=False, allow_null=True, max_whole_digits=12
    )
    trigger = serializers.ChoiceField(
        choices=Order.Trigger.choices, default=Order.Trigger.LAST
    )
    trail_amount = DecimalStringField(
        required=False, allow_null=True, max_whole_digits=12
    )
    trail_bps = serializers.IntegerField(required=False, allow_null=True)
    display_quantity = DecimalStringField(
        required=False, allow_null=True, max_places=10, max_whole_digits=20
    )
    post_only = serializers.ChoiceField(
        choices=Order.PostOnly.choices, default=Order.PostOnly.NONE
    )
    min_quantity = DecimalStringField(
        required=False, allow_null=True, max_places=10, max_whole_digits=20
    )
    self_trade_prevention = serializers.ChoiceField(
        choices=Order.SelfTrade.choices, required=False
    )
    oco_with = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    expire_at = serializers.DateTimeField(required=False, allow_null=True)

    def to_spec(self) -> OrderSpec:
        data = self.validated_data
        order_type = data["type"]
        return OrderSpec(
            account_id=data["account"],
            symbol=data["symbol"],
            side=data["side"],
            type=order_type,
            time_in_force=data.get("time_in_force")
            or default_time_in_force(order_type),
            quantity=data["quantity"],
            price=data.get("price"),
            client_order_id=data.get("client_order_id", ""),
            stop_price=data.get("stop_price"),
            trigger=data["trigger"],
            trail_amount=data.get("trail_amount"),
            trail_bps=data.get("trail_bps"),
            display_quantity=data.get("display_quantity"),
            post_only=data["post_only"],
            min_quantity=data.get("min_quantity") or Decimal(0),
            self_trade_prevention=data.get("self_trade_prevention", ""),
            oco_with=data.get("oco_with"),
            expire_at=data.get("expire_at"),
        )


class AmendRequestSerializer(serializers.Serializer[Any]):
    """The body of ``PATCH /api/v1/orders/{id}``: what to change."""

    quantity = DecimalStringField(
        required=False, allow_null=True, max_places=10, max_whole_digits=20
    )
    price = DecimalStringField(required=False, allow_null=True, max_whole_digits=12)
    stop_price = DecimalStringField(
        required=False, allow_null=True, max_whole_digits=12
    )

    def to_spec(self) -> AmendSpec:
        data = self.validated_data
        return AmendSpec(
            quantity=data.get("quantity"),
            price=data.get("price"),
            stop_price=data.get("stop_price"),
        )


class CancelAllRequestSerializer(serializers.Serializer[Any]):
    """The body of ``POST /api/v1/orders/cancel-all``."""

    account = serializers.IntegerField(min_value=1)
    symbol = serializers.CharField(max_length=40, required=False)
    side = serializers.ChoiceField(choices=Order.Side.choices, required=False)


class CancelAllResponseSerializer(serializers.Serializer[Any]):
    cancelling = serializers.IntegerField()
    orders = serializers.ListField(child=serializers.IntegerField())


class OrderSerializer(serializers.Serializer[Order]):
    """An order as returned by every door."""

    id = serializers.IntegerField()
    account = serializers.IntegerField()
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=Order.Side.choices)
    type = serializers.ChoiceField(choices=Order.Type.choices)
    time_in_force = serializers.ChoiceField(choices=Order.TimeInForce.choices)
    price = serializers.CharField(allow_null=True)
    protection_price = serializers.CharField(allow_null=True)
    quantity = serializers.CharField()
    filled_quantity = serializers.CharField()
    remaining_quantity = serializers.CharField()
    average_price = serializers.CharField(allow_null=True)
    fees = serializers.CharField()
    status = serializers.ChoiceField(choices=OrderStatus.choices)
    status_reason = serializers.CharField()
    client_order_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def to_representation(self, instance: Order) -> dict[str, Any]:
        return order_to_wire(instance)


class FeeScheduleSerializer(serializers.Serializer[Any]):
    maker_fee_bps = serializers.CharField()
    taker_fee_bps = serializers.CharField()
    min_fee = serializers.CharField()


class ReservationSerializer(serializers.Serializer[Any]):
    asset = serializers.CharField()
    amount = serializers.CharField()


class OrderEstimateSerializer(serializers.Serializer[Any]):
    """The response of ``POST /api/v1/orders/estimate`` (schema only)."""

    account = serializers.IntegerField()
    symbol = serializers.CharField()
    side = serializers.ChoiceField(choices=Order.Side.choices)
    type = serializers.ChoiceField(choices=Order.Type.choices)
    time_in_force = serializers.ChoiceField(choices=Order.TimeInForce.choices)
    quantity = serializers.CharField()
    price = serializers.CharField(help_text="The limit, or the protection price.")
    price_basis = serializers.ChoiceField(choices=["limit", "protection"])
    currency = serializers.CharField()
    value = serializers.CharField()
    fees = serializers.CharField(help_text="Worst case: the higher rate, minimum.")
    fees_at_taker_rate = serializers.CharField()
    total = serializers.CharField(help_text="Buy: value + fees; sell: value - fees.")
    fee_schedule = FeeScheduleSerializer()
    reservation = ReservationSerializer()
    available = serializers.CharField()
    sufficient = serializers.BooleanField()


class OrderViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Order]
):
    serializer_class = OrderSerializer
    filterset_fields = {
        "account": ["exact"],
        "status": ["exact", "in"],
        "side": ["exact"],
        "client_order_id": ["exact"],
    }

    def get_queryset(self) -> QuerySet[Order]:
        user = self.request.user
        if not user.is_authenticated:  # e.g. the schema generator's request
            return Order.objects.none()
        return Order.objects.filter(account__access__user_id=user.pk).select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        )

    @extend_schema(
        request=OrderRequestSerializer,
        responses={
            201: OrderSerializer,
            200: OpenApiResponse(
                OrderSerializer, description="Resubmission: the original order"
            ),
            409: OpenApiResponse(
                description="client_order_id reused with a different body"
            ),
        },
    )
    def create(self, request: Request) -> Response:
        body = OrderRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = order_place(user=request.user, spec=body.to_spec())
        return Response(
            order_to_wire(result.order),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    @extend_schema(
        request=OrderRequestSerializer, responses={200: OrderEstimateSerializer}
    )
    @action(detail=False, methods=["post"], url_path="estimate")
    def estimate(self, request: Request) -> Response:
        """The value, fees, total and reservation of an order, without placing it
        (validated like a placement; nothing is written)."""
        body = OrderRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = order_estimate(user=request.user, spec=body.to_spec())
        return Response(estimate_to_wire(result))

    @extend_schema(responses={202: OrderSerializer})
    def destroy(self, request: Request, pk: str) -> Response:
        if not pk.isdigit():
            return _not_found(pk)
        order = order_cancel(user=request.user, order_id=int(pk))
        return Response(order_to_wire(order), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=AmendRequestSerializer, responses={202: OrderSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        """Amend an open order (carried out by the matching worker in arrival
        order; watch the order's events or stream for the result)."""
        if not pk.isdigit():
            return _not_found(pk)
        body = AmendRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        order = order_amend(user=request.user, order_id=int(pk), amend=body.to_spec())
        return Response(order_to_wire(order), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=CancelAllRequestSerializer,
        responses={202: CancelAllResponseSerializer},
    )
    @action(detail=False, methods=["post"], url_path="cancel-all")
    def cancel_all(self, request: Request) -> Response:
        """Cancel every open order of an account, optionally of one symbol/side."""
        body = CancelAllRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        orders = order_cancel_all(
            user=request.user,
            account_id=data["account"],
            symbol=data.get("symbol"),
            side=data.get("side"),
        )
        return Response(
            {"cancelling": len(orders), "orders": [order.pk for order in orders]},
            status=status.HTTP_202_ACCEPTED,
        )


def _not_found(pk: str) -> Response:
    return Response(
        {"code": "order_not_found", "message": f"There is no order {pk}."},
        status=404,
    )
