"""The spine, end to end, the way real clients use it.

Two clients obtain OAuth2 tokens through the authorization-code flow with PKCE,
place crossing orders over REST with bearer tokens, and a third connection sees the
trade on the WebSocket; balances and holdings move by exactly price x quantity plus
fees, and the ledger sums to zero per asset.
"""

import base64
import hashlib
import secrets
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from oauth2_provider.models import Application
from rest_framework.test import APIClient

from config.asgi import application
from exchange.models import Trade
from oms.models import Order
from tests.conftest import (
    MatcherThread,
    assert_trading_consistent,
    balance_of,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

REDIRECT = "http://127.0.0.1:8000/oauth/callback"


def pkce_token(username: str, password: str) -> str:
    """Log in, authorize the public web client with PKCE, exchange the code."""
    browser = Client()
    assert browser.login(username=username, password=password)
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        .rstrip(b"=")
        .decode()
    )
    params = {
        "response_type": "code",
        "client_id": "e2e-web",
        "redirect_uri": REDIRECT,
        "scope": "read trade",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "allow": "Authorize",
    }
    response = browser.post("/o/authorize/", params)
    assert response.status_code == 302, response.content
    code = parse_qs(urlparse(response["Location"]).query)["code"][0]
    token = Client().post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "e2e-web",
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.content
    assert "refresh_token" in token.json()
    return token.json()["access_token"]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def setup_clients(market, alice, bob):
    market.maker_fee_bps, market.taker_fee_bps = Decimal(5), Decimal(10)
    market.save()
    Application.objects.create(
        name="e2e",
        client_id="e2e-web",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        algorithm=Application.NO_ALGORITHM,
    )
    for user in (alice, bob):
        user.set_password("pw-secret-123")
        user.save()
    return pkce_token("alice", "pw-secret-123"), pkce_token("bob", "pw-secret-123")


async def test_a_trade_between_two_token_clients_reaches_rest_the_websocket_and_the_ledger(
    market, symbol, alice, bob, alice_account, bob_account
):
    alice_token, bob_token = await sync_to_async(setup_clients)(market, alice, bob)
    matcher = MatcherThread("XSX").start()
    try:
        # a third party watches the trades over the WebSocket, authenticated by token
        ws = WebsocketCommunicator(
            application,
            f"/ws/v1/?access_token={bob_token}",
            headers=[(b"origin", b"http://127.0.0.1:8000")],
        )
        assert (await ws.connect())[0]
        await ws.send_json_to({"op": "subscribe", "topics": ["trades.XSX:XS01"]})
        assert (await ws.receive_json_from(timeout=5))["type"] == "snapshot"

        def place(token, account, **body):
            response = bearer(token).post(
                "/api/v1/orders",
                {"account": account.pk, "symbol": "XSX:XS01", **body},
                format="json",
            )
            assert response.status_code == 201, response.json()
            return response.json()

        sell = await sync_to_async(place)(
            alice_token, alice_account, side="sell", price="20.00", quantity="250"
        )
        await sync_to_async(wait_for)(
            lambda: Order.objects.get(pk=sell["id"]).status == "working"
        )
        buy = await sync_to_async(place)(
            bob_token, bob_account, side="buy", price="20.50", quantity="250"
        )

        update = await ws.receive_json_from(timeout=10)
        assert (
            update["topic"],
            update["seq"],
            update["data"]["price"],
            update["data"]["quantity"],
        ) == (
            "trades.XSX:XS01",
            1,
            "20.00",
            "250",
        )
        await ws.disconnect()

        trades = await sync_to_async(
            lambda: bearer(alice_token).get("/api/v1/symbols/XSX:XS01/trades").json()
        )()
        assert [
            (t["price"], t["quantity"], t["aggressor_side"]) for t in trades["results"]
        ] == [("20.00", "250", "buy")]
        order = await sync_to_async(
            lambda: bearer(bob_token).get(f"/api/v1/orders/{buy['id']}").json()
        )()
        assert (order["status"], order["filled_quantity"], order["fees"]) == (
            "filled",
            "250",
            "5.00",
        )

        def check_money():
            aud, xs01 = symbol.currency, symbol.asset
            # value 5000.00; bob (taker, 10 bps) pays 5.00, alice (maker, 5 bps) 2.50
            assert balance_of(bob_account, aud).available == Decimal(
                "10000.00"
            ) - Decimal("5005.00")
            assert balance_of(bob_account, aud).held == 0
            assert balance_of(alice_account, aud).available == Decimal(
                "10000.00"
            ) + Decimal("4997.50")
            assert balance_of(bob_account, xs01).available == Decimal(1250)
            assert balance_of(alice_account, xs01).total == Decimal(750)
            trade = Trade.objects.get()
            assert (trade.buyer_fee, trade.seller_fee) == (
                Decimal("5.00"),
                Decimal("2.50"),
            )
            assert_trading_consistent()

        await sync_to_async(check_money)()
    finally:
        await sync_to_async(matcher.stop)()
