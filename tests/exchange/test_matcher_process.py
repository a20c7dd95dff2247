"""The matching worker as a real process: ownership, takeover and crash recovery."""

import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from exchange.matching import advisory_key
from exchange.models import Trade
from oms.models import Order, OrderRequest
from oms.services import OrderError, OrderSpec, order_place
from tests.conftest import assert_trading_consistent, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class MatcherProcess:
    def __init__(self, log_path: Path) -> None:
        db = connection.settings_dict
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="config.settings_test",
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            LOG_LEVEL="INFO",
        )
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_matcher",
                "--market",
                "XSX",
                "--poll-seconds",
                "0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def owns_market(self) -> bool:
        return "matcher owns market XSX" in self.log_path.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def test_readyz_reports_a_market_without_a_matcher_until_one_owns_it(
    tmp_path, client, symbol
):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "ok",
        "channel_layer": "ok",
        "matchers": {"XSX": "no owner"},
    }
    matcher = MatcherProcess(tmp_path / "ready.log")
    try:
        wait_for(lambda: matcher.owns_market, timeout=30)
        response = client.get("/readyz")
        assert (response.status_code, response.json()["status"]) == (200, "ok")
    finally:
        matcher.stop()
    assert client.get("/healthz").json() == {"status": "ok"}


def advisory_holders() -> int:
    key = advisory_key("XSX")
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid = %s AND objid = %s AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [unsigned >> 32, unsigned & 0xFFFFFFFF],
        )
        return cursor.fetchone()[0]


def place(user, account, side, price, quantity, tif="gtc"):
    return order_place(
        user=user,
        spec=OrderSpec(
            account_id=account.pk,
            symbol="XSX:XS01",
            side=side,
            type="limit",
            time_in_force=tif,
            price=Decimal(price),
            quantity=Decimal(quantity),
        ),
    ).order


def inbox_empty() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


def test_only_one_of_two_matchers_owns_a_market_and_the_standby_takes_over(
    tmp_path, symbol, alice, alice_account
):
    first = MatcherProcess(tmp_path / "first.log")
    wait_for(lambda: first.owns_market, timeout=30)
    second = MatcherProcess(tmp_path / "second.log")
    try:
        time.sleep(1.5)  # the standby has had many chances to take the lock
        assert not second.owns_market
        assert advisory_holders() == 1

        order = place(alice, alice_account, "buy", "9.00", "5")
        wait_for(lambda: Order.objects.get(pk=order.pk).status == "working")

        first.kill()
        wait_for(lambda: second.owns_market, timeout=30)
        assert advisory_holders() == 1
        later = place(alice, alice_account, "buy", "9.01", "5")
        wait_for(lambda: Order.objects.get(pk=later.pk).status == "working")
    finally:
        first.stop()
        second.stop()


def test_a_matcher_killed_hard_mid_stream_loses_and_duplicates_nothing(
    tmp_path, symbol, alice, bob, alice_account, bob_account
):
    rng = random.Random(7)
    acknowledged: list[int] = []
    matcher = MatcherProcess(tmp_path / "m0.log")
    kills = 0
    try:
        for i in range(400):
            user, account = rng.choice([(alice, alice_account), (bob, bob_account)])
            side = rng.choice(["buy", "sell"])
            price = f"{rng.randint(995, 1005) / 100:.2f}"
            quantity = str(rng.randint(1, 20))
            try:
                order = place(
                    user,
                    account,
                    side,
                    price,
                    quantity,
                    tif=rng.choice(["gtc", "gtc", "ioc"]),
                )
            except OrderError:
                continue
            acknowledged.append(order.pk)
            if i % 97 == 50:
                matcher.kill()
                kills += 1
                matcher = MatcherProcess(tmp_path / f"m{kills}.log")
        wait_for(inbox_empty, timeout=60)
    finally:
        matcher.stop()
    assert kills == 4

    # every acknowledged order is present and has left the pending state
    orders = {o.pk: o for o in Order.objects.filter(pk__in=acknowledged)}
    assert sorted(orders) == sorted(acknowledged)
    assert not [o for o in orders.values() if o.status == "pending"]
    assert Trade.objects.count() > 0
    assert_trading_consistent()
