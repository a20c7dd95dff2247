"""``run_matcher --market all`` as a real process picks up a market created later."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests import factories
from tests.conftest import assert_trading_consistent, wait_for
from tests.exchange.matcher_support import place, status_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_run_matcher_for_all_markets_matches_a_market_created_after_it_started(
    tmp_path, market
):
    # given run_matcher serving every market
    db = connection.settings_dict
    log_path = tmp_path / "all.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_matcher",
            "--market",
            "all",
            "--poll-seconds",
            "0.1",
            "--discover-seconds",
            "0.2",
        ],
        cwd=ROOT,
        env=dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="config.settings_test",
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            LOG_LEVEL="INFO",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "matcher owns market XSX" in log_path.read_text(), 30)

        # when a market is created and traded
        new = factories.market("XNW")
        symbol = factories.symbol(new, "NW01")
        alice, bob = factories.user("alice"), factories.user("bob")
        alice_account = factories.account(alice, cash="1000.00")
        bob_account = factories.account(bob, holdings={symbol: "10"})
        place(alice, alice_account, "buy", "5.00", "4", symbol="XNW:NW01")
        sell = place(bob, bob_account, "sell", "5.00", "4", symbol="XNW:NW01")

        # then the running process starts a worker for it, which matches them
        wait_for(lambda: status_of(sell) == "filled", timeout=15)
        assert "matcher owns market XNW" in log_path.read_text()
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    assert_trading_consistent()
