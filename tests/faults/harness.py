"""Processes and clients for the fault suite: a real HTTP server, real matching
worker processes, keep-alive REST clients, the scale switch and the figures file.

Everything talks to 127.0.0.1 only; every loop here is bounded.
"""

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]
FIGURES_DIR = ROOT / "var" / "faults"
BIN = Path(sys.executable).parent


def is_full_scale() -> bool:
    """``FAULT_SCALE=full`` (``make soak``) runs the issue's full figures; the
    default is the reduced scale CI runs."""
    return os.environ.get("FAULT_SCALE", "ci") == "full"


def scale(ci: Any, full: Any) -> Any:
    return full if is_full_scale() else ci


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print a test's figures and write them to ``var/faults/<name>.json`` (the
    file ``bench/soak.py`` turns into the table of docs/reliability.md)."""
    figures = {"scale": "full" if is_full_scale() else "ci", **figures}
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\n[{name}] {json.dumps(figures, default=str)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(application_name: str) -> str:
    """The test database, for a child process; ``application_name`` tags its
    sessions in ``pg_stat_activity`` (the session-fault test kills them)."""
    db = connection.settings_dict
    return (
        f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        f"?application_name={application_name}"
    )


def child_env(application_name: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url(application_name),
        "MATCHER_IN_PROCESS": "false",
        "LOG_LEVEL": "INFO",
        **extra,
    }


def backend_pids(application_name: str) -> list[int]:
    """The PostgreSQL backends of the sessions tagged ``application_name``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND datname = current_database() AND pid <> pg_backend_pid()",
            [application_name],
        )
        return [row[0] for row in cursor.fetchall()]


def terminate_backends(application_name: str) -> int:
    """``pg_terminate_backend`` every session tagged ``application_name``;
    returns how many were terminated."""
    pids = backend_pids(application_name)
    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    return len(pids)


class Process:
    """A child process of the suite with its output in a log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the child."""
        if self.is_alive:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.is_alive:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


class MatcherProcess(Process):
    """``manage.py run_matcher`` for one market, as production runs it."""

    def __init__(
        self, log_path: Path, market_code: str = "XSX", name: str = "faults-matcher"
    ) -> None:
        self.market_code = market_code
        self.application_name = name
        super().__init__(
            [
                sys.executable,
                "manage.py",
                "run_matcher",
                "--market",
                market_code,
                "--poll-seconds",
                "0.1",
            ],
            child_env(name),
            log_path,
        )

    @property
    def owns_market(self) -> bool:
        return f"matcher owns market {self.market_code}" in self.log_text()

    @property
    def is_booted(self) -> bool:
        """Django is up and the worker loop runs (as owner or standby)."""
        # Its worker threads may log before the command prints "matching ...".
        return any(
            line.startswith("matching ") for line in self.log_text().splitlines()
        )

    @property
    def owned_at(self) -> float:
        """When this process first took the market (epoch seconds, from its log;
        the log's clock is this machine's, in UTC)."""
        for line in self.log_text().splitlines():
            if f"matcher owns market {self.market_code}" in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.replace(tzinfo=UTC).timestamp()
        return float("nan")

    def ownership_count(self) -> int:
        """How many times this process took the market (re-acquisitions after a
        lost session count again)."""
        return self.log_text().count(f"matcher owns market {self.market_code}")


class WebServer(Process):
    """The services profile's HTTP tier: gunicorn (threaded workers) on a free
    port of 127.0.0.1."""

    def __init__(
        self,
        log_path: Path,
        *,
        workers: int = 2,
        threads: int = 8,
        name: str = "faults-web",
    ) -> None:
        self.port = free_port()
        super().__init__(
            [
                str(BIN / "gunicorn"),
                "config.wsgi",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
            ],
            child_env(name, LOG_LEVEL="WARNING"),
            log_path,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            if not self.is_alive:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"gunicorn did not start: {self.log_text()[-2000:]}")


def access_token(user: Any) -> str:
    """A bearer token (scopes read and trade) for ``user``."""
    from oauth2_provider.models import AccessToken, Application

    application, _ = Application.objects.get_or_create(
        client_id="faults-suite",
        defaults={
            "name": "fault suite",
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        },
    )
    token = secrets.token_urlsafe(30)
    AccessToken.objects.create(
        user=user,
        application=application,
        token=token,
        expires=timezone.now() + timedelta(hours=4),
        scope="read trade",
    )
    return token


class Reply:
    """One HTTP answer: ``status`` 0 means the connection failed (no answer)."""

    def __init__(self, status: int, body: Any, elapsed: float) -> None:
        self.status = status
        self.body = body
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body!r:.200}>"


class RestClient:
    """A keep-alive JSON client of the REST API for one bearer token. Not
    thread-safe: one per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """One request; a kept-alive connection the server had closed is retried
        once on a fresh one (what urllib3 does; order entry carries a
        ``client_order_id``, so a retry cannot place twice)."""
        reused = self.conn is not None
        reply = self._request_once(method, path, body)
        if reply.status == 0 and reused:
            reply = self._request_once(method, path, body)
        return reply

    def _request_once(self, method: str, path: str, body: Any) -> Reply:
        data = None if body is None else json.dumps(body)
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=60
                )
            self.conn.request(method, f"/api/v1{path}", data, self.headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return Reply(0, repr(error), time.perf_counter() - start)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:500].decode(errors="replace")
        return Reply(response.status, parsed, time.perf_counter() - start)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def limit_body(
    account_id: int,
    side: str,
    price: str,
    quantity: str,
    *,
    tif: str = "gtc",
    client_order_id: str | None = None,
    symbol: str = "XSX:XS01",
) -> dict[str, Any]:
    body = {
        "account": account_id,
        "symbol": symbol,
        "side": side,
        "type": "limit",
        "time_in_force": tif,
        "price": price,
        "quantity": quantity,
    }
    if client_order_id is not None:
        body["client_order_id"] = client_order_id
    return body


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class Acknowledgements:
    """What the clients of one test were told, collected from many threads: the
    orders and cancels acknowledged, each order's price and quantity as placed
    (for the replay), the status counts per operation and every unexpected
    answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.placed: list[int] = []
        self.cancelled: list[int] = []
        self.originals: dict[int, tuple[Decimal, Decimal]] = {}
        self.statuses: Counter[str] = Counter()
        self.unexpected: list[tuple[str, int, Any]] = []

    def count(self, operation: str, reply: Reply, expected: set[int]) -> bool:
        """Count ``reply``; record it as unexpected unless its status is in
        ``expected``, or if it is a 5xx, names a deadlock, or never came."""
        text = json.dumps(reply.body, default=str).lower()
        ok = reply.status in expected and "deadlock" not in text
        with self.lock:
            self.statuses[f"{operation} {reply.status}"] += 1
            if not ok:
                self.unexpected.append((operation, reply.status, reply.body))
        return ok

    def order(self, reply: Reply) -> None:
        body = reply.body
        with self.lock:
            self.placed.append(body["id"])
            self.originals[body["id"]] = (
                Decimal(body["price"]),
                Decimal(body["quantity"]),
            )

    def cancels(self, order_ids: list[int]) -> None:
        with self.lock:
            self.cancelled.extend(order_ids)

    @property
    def server_errors(self) -> int:
        return sum(1 for _op, status, _b in self.unexpected if status >= 500)
