"""How long a standby matcher takes to own a market after its owner is SIGKILLed.

Usage: .venv/bin/python bench/matcher_takeover.py [--kills 18] [--poll-seconds 1.0]

Sets up a fresh database (``TAKEOVER_DATABASE``, default ``xchange_takeover``)
with the demo data, runs two ``manage.py run_matcher --market XSX`` processes,
then repeatedly SIGKILLs whichever owns XSX (the pid recorded in its
``MarketOwner.holder``), places an order at once, and measures from the kill

- to the standby's new ownership epoch (the lock taken, the epoch bumped), and
- to that order resting on the book (the standby has rebuilt and matched).

The killed process is replaced by a fresh standby before the next kill. Prints
every measurement, then the median and maximum of each.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fresh_database

ROOT = Path(__file__).resolve().parents[1]
DB_NAME = os.environ.get("TAKEOVER_DATABASE", "xchange_takeover")
ENV = dict(
    os.environ,
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
    DJANGO_SETTINGS_MODULE="config.settings",
    MATCHER_IN_PROCESS="false",
    LOG_LEVEL="INFO",
)


def matcher_start(poll_seconds: float, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_matcher",
            "--market",
            "XSX",
            "--poll-seconds",
            str(poll_seconds),
        ],
        cwd=ROOT,
        env=ENV,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while "matching XSX" not in log.read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"matcher did not start: {log.read_text()}")
        time.sleep(0.05)
    return process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=18)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    options = parser.parse_args()
    fresh_database(DB_NAME, ENV)

    from django.contrib.auth import get_user_model

    from exchange.models import MarketOwner, Symbol
    from oms.models import Order
    from oms.services import OrderSpec, order_place
    from registry.models import Account

    symbol = Symbol.objects.filter(market__code="XSX").order_by("code").first()
    account = Account.objects.filter(access__role="owner").order_by("pk").first()
    user = get_user_model().objects.filter(account_access__account=account).first()
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / "takeover"
    logs.mkdir(exist_ok=True)
    processes = {}
    for n in range(2):
        process = matcher_start(options.poll_seconds, logs / f"m{n}.log")
        processes[process.pid] = process
    owner = lambda: MarketOwner.objects.get(market__code="XSX")  # noqa: E731
    while owner().epoch == 0:
        time.sleep(0.05)
    takeovers: list[float] = []
    first_orders: list[float] = []
    for kill in range(options.kills):
        time.sleep(0.5)
        current = owner()
        pid = int(current.holder.split(":")[1])
        processes.pop(pid).send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        order = order_place(
            user=user,
            spec=OrderSpec(
                account_id=account.pk,
                symbol=f"XSX:{symbol.code}",
                side="buy",
                type="limit",
                time_in_force="gtc",
                price=Decimal("0.01") * (100 + kill),
                quantity=Decimal("1"),
            ),
        ).order
        while owner().epoch == current.epoch:
            time.sleep(0.005)
        takeovers.append(time.monotonic() - killed_at)
        while Order.objects.get(pk=order.pk).status == "pending":
            time.sleep(0.005)
        first_orders.append(time.monotonic() - killed_at)
        print(
            f"kill {kill + 1}: owned again after {takeovers[-1]:.3f} s,"
            f" order on the book after {first_orders[-1]:.3f} s",
            flush=True,
        )
        process = matcher_start(options.poll_seconds, logs / f"m{kill + 2}.log")
        processes[process.pid] = process
    for process in processes.values():
        process.terminate()
        process.wait(10)
    for name, values in (("takeover", takeovers), ("first order", first_orders)):
        print(
            f"{name}: median {statistics.median(values):.3f} s,"
            f" max {max(values):.3f} s over {len(values)} kills"
        )


if __name__ == "__main__":
    main()
