"""HTTP order entry under WSGI (gunicorn) vs ASGI (uvicorn), same machine, same run.

Usage: .venv/bin/python bench/http_servers.py [--requests 3000] [--clients 8]

Creates the database ``xchange_bench`` on the local PostgreSQL, loads the demo data,
starts each server in turn on 127.0.0.1 and fires ``--requests`` order placements
(non-crossing limit buys, spread over the demo accounts) from ``--clients`` threads
with keep-alive connections. Prints requests per second and latency percentiles.
No matcher runs: this measures the order-entry door, not matching.
"""

import argparse
import http.client
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ENV, ROOT, fresh_database


def setup() -> tuple[str, list[int]]:
    fresh_database()
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application

    from registry.api import accounts_of

    alice = get_user_model().objects.get(username="alice")
    token = secrets.token_urlsafe(30)
    AccessToken.objects.create(
        user=alice,
        application=Application.objects.get(client_id="demo-web"),
        token=token,
        expires=timezone.now() + timedelta(hours=2),
        scope="read trade",
    )
    return token, [a.pk for a in accounts_of(alice)]


def fire(
    port: int, token: str, accounts: list[int], total: int, clients: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = []
    lock = threading.Lock()
    per_client = total // clients

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for i in range(per_client):
            body = json.dumps(
                {
                    "account": accounts[(index + i) % len(accounts)],
                    "symbol": f"XSX:XS0{1 + (i % 9)}",
                    "side": "buy",
                    "price": "1.00",
                    "quantity": "1",
                }
            )
            start = time.perf_counter()
            conn.request(
                "POST",
                "/api/v1/orders",
                body,
                {
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                },
            )
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 201:
                errors.append(response.status)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "errors": len(errors),
    }


def serve(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    token, accounts = setup()
    bin_dir = Path(sys.executable).parent
    servers = {
        "gunicorn sync x3 (WSGI)": [
            str(bin_dir / "gunicorn"),
            "config.wsgi",
            "--workers",
            "3",
            "--bind",
            "127.0.0.1:8761",
        ],
        "uvicorn x1 (ASGI)": [
            str(bin_dir / "uvicorn"),
            "config.asgi:application",
            "--port",
            "8761",
            "--log-level",
            "warning",
        ],
        "uvicorn x3 (ASGI)": [
            str(bin_dir / "uvicorn"),
            "config.asgi:application",
            "--port",
            "8761",
            "--workers",
            "3",
            "--log-level",
            "warning",
        ],
    }
    print(
        f"{args.requests} order placements, {args.clients} keep-alive clients, PostgreSQL, 2 cores"
    )
    print(f"{'server':28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    results = {}
    for name, command in servers.items():
        process = serve(command, 8761)
        try:
            fire(8761, token, accounts, 200, args.clients)  # warm-up
            results[name] = fire(8761, token, accounts, args.requests, args.clients)
        finally:
            process.terminate()
            process.wait(10)
        r = results[name]
        print(
            f"{name:28} {r['rps']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['errors']:7d}"
        )
    base = results["gunicorn sync x3 (WSGI)"]["rps"]
    for name, r in results.items():
        print(f"{name:28} {r['rps'] / base:6.2f}x of gunicorn")


if __name__ == "__main__":
    main()
