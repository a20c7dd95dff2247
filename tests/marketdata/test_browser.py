"""End to end in a real browser (Debian's Chromium driven by Playwright).

The real ASGI application (HTTP and the WebSocket stream) runs under uvicorn in a
thread of the test process, next to a matching worker thread; two browser contexts
sign in as alice and bob and trade through the order ticket, and alice's pages
follow the trade live over the WebSocket, without reloading.
"""

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvicorn
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from oms.models import Order
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "pw-secret-123"  # tests.factories.user
SCREENSHOT = "/tmp/web-trade.png"
DASHBOARD_SCREENSHOT = "/tmp/web-dashboard.png"
TRADE_PATH = "/trade/XSX:XS01/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_asgi(transactional_db) -> Iterator[str]:
    """``config.asgi:application`` served by uvicorn on 127.0.0.1 (an allowed host).

    The test settings have no WhiteNoise and no DEBUG, so static files are served by
    Django's static files handler wrapped around the application (HTTP only; the
    WebSocket passes straight through).
    """
    from config.asgi import application

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            # The stubs want Django's ASGIHandler; any ASGI application works.
            app=ASGIStaticFilesHandler(application),  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    assert not thread.is_alive()


def orm(read: Callable[[], Any]) -> Any:
    """Run an ORM read in a thread of its own.

    Playwright's sync API keeps an event loop in the test's thread: Django refuses
    ORM calls there, and its per-context connections would outlive the test.
    """

    def call() -> Any:
        try:
            return read()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(
    browser: Browser, base: str, username: str, next_path: str = TRADE_PATH
) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    return page


def place_limit(page: Page, side: str, price: str, quantity: str) -> None:
    page.select_option("#id_side", side)
    page.select_option("#id_type", "limit")
    page.select_option("#id_time_in_force", "gtc")
    page.fill("#id_price", price)
    page.fill("#id_quantity", quantity)
    page.click("#ticket button[type=submit]")
    expect(page.locator(".message.success")).to_contain_text("placed (pending)")
    # the reloaded page is subscribed again before anything else happens
    expect(page.locator("#live")).to_have_attribute("data-state", "live")


def test_a_trade_between_two_browsers_shows_live_on_the_sellers_pages(
    live_asgi, matcher, alice_account, bob_account, browser
):
    # (``browser`` comes last: once Playwright runs, this thread has an event loop)
    alice = sign_in(browser, live_asgi, "alice")
    place_limit(alice, "sell", "10.05", "100")
    sell = orm(lambda: Order.objects.get(account=alice_account))
    ask = alice.locator(
        'tbody[data-book="asks"] tr[data-price="10.05"] [data-field="quantity"]'
    )
    expect(ask).to_have_text("100")  # the matcher accepted it: a live book update
    my_order = alice.locator(f'tr[data-order-id="{sell.pk}"] [data-field="status"]')
    expect(my_order).to_have_text("working")

    # alice's dashboard in a second tab follows her balances and orders
    dashboard = alice.context.new_page()
    dashboard.goto(f"{live_asgi}/")
    expect(dashboard.locator("#live")).to_have_attribute("data-state", "live")
    cash = dashboard.locator('tbody[data-balances] tr[data-asset="AUD"]')
    expect(cash.locator('[data-field="available"]')).to_have_text("10000.00")

    # any reload from here on would lose this marker
    alice.evaluate("window.__sameDocument = true")
    dashboard.evaluate("window.__sameDocument = true")

    bob = sign_in(browser, live_asgi, "bob")
    place_limit(bob, "buy", "10.05", "40")

    trade_row = alice.locator("tbody[data-trades] tr").first
    expect(trade_row).to_contain_text("10.05")
    expect(trade_row).to_contain_text("40")
    expect(ask).to_have_text("60")
    expect(alice.locator('[data-l1="last"]')).to_have_text("10.05")
    expect(alice.locator('[data-l1="ask"]')).to_have_text("10.05")
    expect(my_order).to_have_text("partially_filled")
    expect(
        alice.locator(f'tr[data-order-id="{sell.pk}"] [data-field="filled_quantity"]')
    ).to_have_text("40")
    assert alice.evaluate("window.__sameDocument") is True

    # 40 x 10.05 = 402.00 credited, no fees on this market
    expect(cash.locator('[data-field="available"]')).to_have_text("10402.00")
    expect(
        dashboard.locator(
            'tbody[data-holdings] tr[data-holding="XSX:XS01"] [data-field="quantity"]'
        )
    ).to_have_text("960")
    assert dashboard.evaluate("window.__sameDocument") is True

    # bob's own order went from pending to filled on his page, also live
    buy = orm(lambda: Order.objects.get(account=bob_account))
    expect(
        bob.locator(f'tr[data-order-id="{buy.pk}"] [data-field="status"]')
    ).to_have_text("filled")

    dashboard.screenshot(path=DASHBOARD_SCREENSHOT, full_page=True)
    alice.bring_to_front()
    alice.screenshot(path=SCREENSHOT, full_page=True)

    orm(sell.refresh_from_db)
    assert (sell.status, sell.filled_quantity) == ("partially_filled", 40)
