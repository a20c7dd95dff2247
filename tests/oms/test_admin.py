"""The order console: read-only orders, and cancels queued by staff."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from oms.models import Order, OrderRequest
from oms.services import OrderError, OrderSpec, order_place
from oms.staff import order_cancel_by_staff
from registry.models import AuditRecord
from tests import factories
from tests.registry.test_admin import messages_of

pytestmark = pytest.mark.django_db

OMS_MODELS = ["order", "orderevent", "orderrequest"]
ORDERS_URL = "admin:oms_order_changelist"


def place(user, account, **fields) -> Order:
    spec = OrderSpec(
        account_id=account.pk,
        symbol="XSX:XS01",
        side=fields.get("side", "buy"),
        type="limit",
        time_in_force="gtc",
        quantity=Decimal(fields.get("quantity", "10")),
        price=Decimal(fields.get("price", "10.00")),
    )
    return order_place(user=user, spec=spec).order


@pytest.fixture
def order(alice, alice_account):
    return place(alice, alice_account)


def cancel_action(client, orders):
    return client.post(
        reverse(ORDERS_URL),
        {
            "action": "cancel_orders",
            "_selected_action": [o.pk for o in orders],
            "index": 0,
        },
    )


def cancel_requests() -> list[tuple[int, int | None]]:
    return list(
        OrderRequest.objects.filter(kind="cancel")
        .order_by("id")
        .values_list("order_id", "requested_by_id")
    )


# Pages render ---------------------------------------------------------------------


@pytest.mark.parametrize("model", OMS_MODELS)
def test_each_oms_changelist_and_change_page_renders(admin_client, order, model):
    changelist = admin_client.get(reverse(f"admin:oms_{model}_changelist"))
    assert changelist.status_code == 200
    first = changelist.context["cl"].result_list[0]

    change = admin_client.get(reverse(f"admin:oms_{model}_change", args=[first.pk]))

    assert change.status_code == 200


def test_the_order_page_shows_its_events(admin_client, order):
    response = admin_client.get(reverse("admin:oms_order_change", args=[order.pk]))

    (events,) = response.context["inline_admin_formsets"]
    assert [form.instance.to_status for form in events.formset.forms] == ["pending"]


@pytest.mark.parametrize(
    ("term", "found"), [("{id}", True), ("{number}", True), ("0", False)]
)
def test_orders_are_found_by_id_or_account_number(
    admin_client, order, alice_account, term, found
):
    query = term.format(id=order.pk, number=alice_account.number)

    response = admin_client.get(reverse(ORDERS_URL), {"q": query})

    assert list(response.context["cl"].result_list) == ([order] if found else [])


def test_the_order_list_filters_by_status_side_type_and_market(
    admin_client, order, market
):
    response = admin_client.get(
        reverse(ORDERS_URL),
        {
            "status__exact": "pending",
            "side__exact": "buy",
            "type__exact": "limit",
            "market__id__exact": market.pk,
        },
    )

    assert list(response.context["cl"].result_list) == [order]


def test_the_order_list_runs_a_fixed_number_of_queries(
    admin_client, alice, alice_account, django_assert_max_num_queries
):
    for price in ("9.00", "9.50", "9.90"):
        place(alice, alice_account, price=price)

    with django_assert_max_num_queries(12):
        response = admin_client.get(reverse(ORDERS_URL))

    assert len(response.context["cl"].result_list) == 3


# Read-only records -----------------------------------------------------------------


@pytest.mark.parametrize("model", OMS_MODELS)
def test_orders_events_and_requests_cannot_be_added(admin_client, model):
    response = admin_client.get(reverse(f"admin:oms_{model}_add"))

    assert response.status_code == 403


@pytest.mark.parametrize("model", OMS_MODELS)
def test_orders_events_and_requests_cannot_be_changed_or_deleted(
    admin_client, order, model
):
    changelist = admin_client.get(reverse(f"admin:oms_{model}_changelist"))
    first = changelist.context["cl"].result_list[0]

    change = admin_client.post(
        reverse(f"admin:oms_{model}_change", args=[first.pk]), {}
    )
    delete = admin_client.post(
        reverse(f"admin:oms_{model}_delete", args=[first.pk]), {"post": "yes"}
    )

    assert (change.status_code, delete.status_code) == (403, 403)
    order.refresh_from_db()
    assert (order.status, order.quantity) == ("pending", Decimal(10))


# Cancelling -------------------------------------------------------------------------


def test_the_cancel_action_queues_a_cancel_request_naming_the_admin(
    admin_client, admin_user, order
):
    response = cancel_action(admin_client, [order])

    assert response.status_code == 302
    assert cancel_requests() == [(order.pk, admin_user.pk)]
    order.refresh_from_db()
    assert order.status == "pending"  # the matching worker carries the cancel out
    record = AuditRecord.objects.get(action="order_cancel")
    assert (record.actor, record.object_type, record.object_id, record.reason) == (
        admin_user,
        "oms.order",
        str(order.pk),
        "Cancelled by staff",
    )
    assert messages_of(response) == [f"Cancel queued for #{order.pk}."]


def test_cancelling_an_order_already_being_cancelled_queues_nothing_more(
    admin_client, admin_user, order
):
    cancel_action(admin_client, [order])

    cancel_action(admin_client, [order])

    assert cancel_requests() == [(order.pk, admin_user.pk)]
    assert AuditRecord.objects.filter(action="order_cancel").count() == 1


def test_cancelling_a_finished_order_shows_an_error_and_queues_nothing(
    admin_client, alice, alice_account, order
):
    done = place(alice, alice_account, price="9.00")
    Order.objects.filter(pk=done.pk).update(status="cancelled")

    response = cancel_action(admin_client, [order, done])

    assert messages_of(response) == [
        f"Cancel queued for #{order.pk}.",
        f"Order {done.pk} is cancelled.",
    ]
    assert [order_id for order_id, _ in cancel_requests()] == [order.pk]


def test_staff_cancel_needs_no_access_to_the_account(order):
    operator = factories.user("operator", is_staff=True)

    order_cancel_by_staff(order=order, acting_user=operator, reason="Client called")

    assert cancel_requests() == [(order.pk, operator.pk)]
    assert AuditRecord.objects.get(action="order_cancel").reason == "Client called"


def test_staff_cancel_of_a_finished_order_raises_order_not_open(order):
    Order.objects.filter(pk=order.pk).update(status="filled")

    with pytest.raises(OrderError) as raised:
        order_cancel_by_staff(order=order, acting_user=factories.user("operator"))

    assert (raised.value.code, raised.value.status) == ("order_not_open", 409)
    assert cancel_requests() == []
    assert not AuditRecord.objects.filter(action="order_cancel").exists()


def test_staff_without_the_order_change_permission_are_not_offered_the_cancel_action(
    client, order
):
    viewer = factories.user("viewer")
    viewer.is_staff = True
    viewer.save(update_fields=["is_staff"])
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(viewer)

    listed = client.get(reverse(ORDERS_URL))
    response = cancel_action(client, [order])

    assert listed.status_code == 200
    assert listed.context["action_form"] is None
    assert cancel_requests() == []
    assert response.status_code == 200
