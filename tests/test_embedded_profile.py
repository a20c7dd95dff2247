"""A newcomer's path: the embedded profile (SQLite, in-memory channel layer, matching
threads inside the web process) brought up as ``make run`` does, then used."""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import websockets

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def embedded(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "DJANGO_SETTINGS_MODULE",
            "MATCHER_IN_PROCESS",
        }
    }
    env.update(
        SQLITE_PATH=str(tmp_path / "xchange.sqlite3"),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    port = free_port()
    python = sys.executable
    for command in (["migrate", "--noinput"], ["demo_data", "--port", str(port)]):
        subprocess.run(
            [python, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    server = subprocess.Popen(
        [python, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    try:
        yield base, env
    finally:
        server.terminate()
        server.wait(10)


def login(base: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/")
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert found is not None, page.text
    token = found.group(1)
    response = session.post(
        f"{base}/accounts/login/",
        data={
            "username": username,
            "password": "trade-demo-1",
            "csrfmiddlewaretoken": token,
        },
        headers={"Referer": f"{base}/accounts/login/"},
    )
    assert response.status_code == 200 and "sessionid" in session.cookies
    csrf_token = session.cookies["csrftoken"]
    assert csrf_token is not None
    session.headers.update({"X-CSRFToken": csrf_token, "Referer": f"{base}/"})
    return session


def test_the_embedded_profile_trades_end_to_end_on_sqlite(embedded):
    base, env = embedded
    alice, bob = login(base, "alice"), login(base, "bob")
    alice_account = alice.get(f"{base}/api/v1/accounts").json()[0]["id"]
    bob_account = bob.get(f"{base}/api/v1/accounts").json()[0]["id"]

    async def scenario():
        ws_url = base.replace("http", "ws") + "/ws/v1/"
        async with websockets.connect(ws_url, origin=base) as ws:
            await ws.send(
                json.dumps({"op": "subscribe", "topics": ["trades.XSX:XS05"]})
            )
            assert json.loads(await ws.recv())["type"] == "snapshot"
            sell = alice.post(
                f"{base}/api/v1/orders",
                json={
                    "account": alice_account,
                    "symbol": "XSX:XS05",
                    "side": "sell",
                    "price": "3.21",
                    "quantity": "500",
                },
            )
            buy = bob.post(
                f"{base}/api/v1/orders",
                json={
                    "account": bob_account,
                    "symbol": "XSX:XS05",
                    "side": "buy",
                    "price": "3.25",
                    "quantity": "300",
                },
            )
            assert (sell.status_code, buy.status_code) == (201, 201)
            update = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return update, buy.json()["id"]

    update, buy_id = asyncio.run(scenario())
    assert (update["seq"], update["data"]["price"], update["data"]["quantity"]) == (
        1,
        "3.21",
        "300",
    )
    order = bob.get(f"{base}/api/v1/orders/{buy_id}").json()
    # 300 x 3.21 = 963.00, taker fee 10 bps = 0.96
    assert (order["status"], order["fees"]) == ("filled", "0.96")
    balances = bob.get(f"{base}/api/v1/accounts/{bob_account}/balances").json()
    assert balances == [
        {
            "asset": "AUD",
            "available": "99036.04",
            "held": "0.00",
            "unsettled": "0.00",
            "total": "99036.04",
        }
    ]
    reconcile = subprocess.run(
        [sys.executable, "manage.py", "reconcile_ledger"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert reconcile.returncode == 0, reconcile.stderr
