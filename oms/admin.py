"""The staff console for orders: read-only history, and cancelling by staff.

Orders, their events and the matching inbox are never edited here; the one write
is the "Cancel selected orders" action, which queues cancels through
``oms.staff.order_cancel_by_staff`` (audited, carried out by the matching worker).
"""

from typing import ClassVar

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from oms.models import Order, OrderEvent, OrderRequest
from oms.services import OrderError
from oms.staff import order_cancel_by_staff
from registry.admin import ReadOnlyAdminMixin, search_term_id


class OrderEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderEvent
    fields: ClassVar[tuple[str, ...]] = (
        "created_at",
        "from_status",
        "to_status",
        "reason",
        "fill_quantity",
        "fill_price",
        "trade_id",
        "acting_user",
    )
    readonly_fields = fields
    can_delete = False
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[OrderEvent]:
        return super().get_queryset(request).select_related("acting_user")


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "account",
        "symbol",
        "side",
        "type",
        "time_in_force",
        "price",
        "stop_price",
        "quantity",
        "filled_quantity",
        "status",
        "created_at",
    ]
    list_filter = ["status", "side", "type", "time_in_force", "market"]
    list_select_related = ["account", "symbol__market"]
    search_fields = ["account__number", "client_order_id__exact"]
    search_help_text = "An order id, an account number or a client order id."
    inlines = [OrderEventInline]
    actions = ["cancel_orders"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        # The change page shows the foreign keys as text: fetch them in one go.
        return (
            super()
            .get_queryset(request)
            .select_related(
                "account", "symbol__market", "market", "held_asset", "placed_by"
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Order], search_term: str
    ) -> tuple[QuerySet[Order], bool]:
        order_id = search_term_id(search_term)
        if order_id is not None:
            return queryset.filter(pk=order_id), False
        return super().get_search_results(request, queryset, search_term)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Staff with the order change permission may cancel (there is no editing)."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(description="Cancel selected orders", permissions=["cancel"])
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        queued, refused = [], []
        for order in queryset.order_by("pk"):
            try:
                order_cancel_by_staff(order=order, acting_user=request.user)
            except OrderError as error:
                refused.append(error.message)
            else:
                queued.append(f"#{order.pk}")
        if queued:
            self.message_user(
                request,
                f"Cancel queued for {', '.join(queued)}.",
                messages.SUCCESS,
            )
        for message in refused:
            self.message_user(request, message, messages.ERROR)


@admin.register(OrderEvent)
class OrderEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "order",
        "from_status",
        "to_status",
        "reason",
        "fill_quantity",
        "fill_price",
        "created_at",
    ]
    list_filter = ["to_status"]
    list_select_related = ["order"]
    show_full_result_count = False
    search_fields = ["reason"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OrderEvent], search_term: str
    ) -> tuple[QuerySet[OrderEvent], bool]:
        order_id = search_term_id(search_term)
        if order_id is not None:
            return queryset.filter(order_id=order_id), False
        return super().get_search_results(request, queryset, search_term)


@admin.register(OrderRequest)
class OrderRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "market",
        "order",
        "kind",
        "requested_by",
        "created_at",
        "processed_at",
    ]
    list_filter = ["kind", "market"]
    list_select_related = ["market", "order", "requested_by"]
    show_full_result_count = False
    search_fields = ["order__client_order_id__exact"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OrderRequest], search_term: str
    ) -> tuple[QuerySet[OrderRequest], bool]:
        order_id = search_term_id(search_term)
        if order_id is not None:
            return queryset.filter(order_id=order_id), False
        return super().get_search_results(request, queryset, search_term)
