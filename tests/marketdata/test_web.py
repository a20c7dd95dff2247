"""The retail web app: dashboard, symbol page, order ticket, cancel and sign-in."""

from decimal import Decimal

import pytest
from django.test import Client

from oms.models import Order, OrderRequest
from oms.services import OrderSpec, order_place
from registry.models import AccountAccess
from tests import factories

# The symbol page reads the book in its own REPEATABLE READ transaction
# (exchange.selectors.snapshot_transaction), which cannot start inside the test
# transaction of a plain ``django_db`` test.
pytestmark = pytest.mark.django_db(transaction=True)

TRADE_URL = "/trade/XSX:XS01/"


@pytest.fixture
def web(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def place(user, account, side: str, price: str, quantity: str) -> Order:
    spec = OrderSpec(
        account_id=account.pk,
        symbol="XSX:XS01",
        side=side,
        type="limit",
        time_in_force="gtc",
        quantity=Decimal(quantity),
        price=Decimal(price),
    )
    return order_place(user=user, spec=spec).order


def ticket(account, **fields):
    body = {
        "account": account.pk,
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "price": "10.05",
        "quantity": "100",
        "client_order_id": "",
    }
    body.update(fields)
    return body


def test_the_dashboard_shows_the_users_balances_exactly_and_no_one_elses_accounts(
    web, alice_account, bob_account, market
):
    response = web.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert alice_account.number in page
    assert bob_account.number not in page
    # cash as the wire string (scale 2), holdings as the wire string (scale 0)
    assert 'data-field="available">10000.00<' in page
    assert 'data-field="total">10000.00<' in page
    assert 'data-holding="XSX:XS01"' in page
    assert 'data-field="quantity">1000<' in page
    # the market list with its state
    assert 'data-market="XSX"' in page and ">open<" in page
    # another user's account cannot be selected
    assert web.get(f"/?account={bob_account.pk}").status_code == 404


def test_the_dashboard_lists_open_and_recent_orders_with_cancel_buttons(
    web, alice, alice_account, symbol
):
    order = place(alice, alice_account, "buy", "9.5", "7")
    page = web.get(f"/?account={alice_account.pk}").content.decode()
    assert page.count(f'data-order-id="{order.pk}"') == 2  # open and recent tables
    assert f'action="/orders/{order.pk}/cancel/"' in page
    assert 'data-field="price">9.50<' in page
    assert 'data-field="held">66.50<' in page  # 9.50 x 7 reserved


def test_a_viewer_sees_the_account_but_gets_no_ticket_and_no_cancel(bob, symbol):
    viewer = factories.user("vera")
    account = factories.account(bob, cash="500.00")
    AccountAccess.objects.create(
        user=viewer, account=account, role=AccountAccess.Role.VIEWER
    )
    place(bob, account, "buy", "1.00", "1")
    client = Client()
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert account.number in page and "500.00" in page
    assert "/cancel/" not in page.split('<template id="order-row">')[0]
    trade_page = client.get(TRADE_URL).content.decode()
    assert "You have no account you may trade." in trade_page


def test_the_symbol_page_shows_the_book_trades_and_the_ticket(
    web, alice, alice_account, symbol
):
    place(alice, alice_account, "sell", "10.10", "5")
    response = web.get(TRADE_URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-symbol="XSX:XS01"' in page
    assert 'id="ticket"' in page and 'name="price"' in page
    assert f'<option value="{alice_account.pk}" selected>' in page
    # the pending order is not on the book yet, but it is among the user's orders
    assert 'data-field="status">pending<' in page
    assert web.get("/trade/XSX:NOPE/").status_code == 404


def test_placing_a_limit_order_through_the_ticket_creates_exactly_that_order(
    web, alice, alice_account, symbol
):
    response = web.post(TRADE_URL, ticket(alice_account, price="10.05", quantity="100"))
    assert response.status_code == 302
    assert response["Location"] == f"{TRADE_URL}?account={alice_account.pk}"
    order = Order.objects.get()
    assert (
        order.account_id,
        order.symbol_id,
        order.side,
        order.type,
        order.time_in_force,
        order.price,
        order.quantity,
        order.status,
        order.placed_by_id,
    ) == (
        alice_account.pk,
        symbol.pk,
        "buy",
        "limit",
        "gtc",
        Decimal("10.05"),
        Decimal("100"),
        "pending",
        alice.pk,
    )
    page = web.get(response["Location"]).content.decode()
    assert f"Order {order.pk} placed (pending)" in page


def test_the_same_ticket_submitted_twice_places_one_order(web, alice_account, symbol):
    body = ticket(alice_account, client_order_id="ticket-1")
    assert web.post(TRADE_URL, body).status_code == 302
    response = web.post(TRADE_URL, body, follow=True)
    assert Order.objects.count() == 1
    assert "was already placed" in response.content.decode()


@pytest.mark.parametrize(
    ("fields", "text", "field"),
    [
        (
            {"price": "10.005"},
            "The price must be a multiple of the tick size 0.01.",
            "price",
        ),
        (
            {"quantity": "2000", "price": "10.00"},
            "20000 AUD needed, 10000 available.",
            None,
        ),
        ({"price": "1e3"}, "Enter a positive decimal number such as 10.05.", "price"),
        ({"price": ""}, "A limit order needs a price.", "price"),
        (
            {"type": "market", "price": "", "time_in_force": "gtc"},
            "A market order is IOC or FOK.",
            "time_in_force",
        ),
    ],
)
def test_a_bad_ticket_shows_the_error_and_places_nothing(
    web, alice_account, symbol, fields, text, field
):
    response = web.post(TRADE_URL, ticket(alice_account, **fields))
    assert response.status_code == 400
    page = response.content.decode()
    assert text in page
    form = response.context["form"]
    assert text in (form.errors.get(field or "__all__") or [])
    assert Order.objects.count() == 0
    # the ticket keeps what was typed
    assert 'value="100"' in page or 'value="2000"' in page


def test_a_ticket_for_another_users_account_is_refused(
    web, alice_account, bob_account, symbol
):
    response = web.post(TRADE_URL, ticket(bob_account))
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert Order.objects.count() == 0


def test_cancelling_posts_a_cancel_request(web, alice, alice_account, symbol):
    order = place(alice, alice_account, "sell", "11.00", "3")
    next_url = f"/?account={alice_account.pk}"
    response = web.post(f"/orders/{order.pk}/cancel/", {"next": next_url})
    assert response.status_code == 302 and response["Location"] == next_url
    cancels = OrderRequest.objects.filter(order=order, kind=OrderRequest.Kind.CANCEL)
    assert cancels.count() == 1
    assert cancels.get().requested_by_id == alice.pk
    page = web.get(next_url).content.decode()
    assert f"Cancel requested for order {order.pk}" in page
    # an unsafe next is ignored; GET is not allowed
    assert (
        web.post(f"/orders/{order.pk}/cancel/", {"next": "https://evil.example/"})[
            "Location"
        ]
        == "/"
    )
    assert web.get(f"/orders/{order.pk}/cancel/").status_code == 405


def test_cancelling_someone_elses_order_is_an_error_message(
    web, bob, bob_account, alice_account, symbol
):
    order = place(bob, bob_account, "sell", "11.00", "3")
    response = web.post(f"/orders/{order.pk}/cancel/", follow=True)
    assert f"There is no order {order.pk}." in response.content.decode()
    assert not OrderRequest.objects.filter(kind=OrderRequest.Kind.CANCEL).exists()


def test_signed_out_the_symbol_page_redirects_to_login_and_home_is_a_welcome(
    client, market, symbol
):
    response = client.get(TRADE_URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/trade/XSX")
    home = client.get("/")
    assert home.status_code == 200
    page = home.content.decode()
    assert "Welcome" in page and 'href="/accounts/login/"' in page
    assert 'data-market="XSX"' in page and 'href="/trade/XSX:XS01/"' in page
    assert client.post("/orders/1/cancel/")["Location"].startswith("/accounts/login/")


def test_the_login_page_renders_and_a_real_login_works(client, alice, alice_account):
    page = client.get("/accounts/login/?next=/")
    assert page.status_code == 200
    assert 'name="username"' in page.content.decode()
    bad = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert (
        bad.status_code == 200
        and "Please enter a correct username and password" in bad.content.decode()
    )
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": "pw-secret-123", "next": "/"},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    dashboard = client.get("/").content.decode()
    assert alice_account.number in dashboard and "Log out" in dashboard
    logout = client.post("/accounts/logout/")
    assert logout.status_code == 302
    assert "Welcome" in client.get("/").content.decode()
