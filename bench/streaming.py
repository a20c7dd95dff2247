"""WebSocket fan-out: trades and book updates to many subscribers under a steady flow.

Usage: .venv/bin/python bench/streaming.py [--clients 100,1000] [--workers 1,2]
       [--rate 10] [--seconds 20]

Services profile on this machine: a fresh ``xchange_bench`` PostgreSQL database with
the demo data, the Redis channel layer, a matching worker process
(``manage.py run_matcher --market XSX``) and uvicorn (``config.asgi:application``,
1 then 2 worker processes) on 127.0.0.1. For each scenario a separate asyncio process
opens N WebSocket connections with the ``websockets`` library, each subscribed to
``trades.XSX:XS01`` and ``book.XSX:XS01``, while this process places a steady
crossing order flow through the OMS service (``order_place``: a 1-lot sell, then a
1-lot buy at the same price, ``--rate`` orders per second). After a warm-up it
counts, over ``--seconds``, the update frames delivered per second (all clients) and
the latency from the trade's ``executed_at`` (set by the matcher at the start of its
batch) to receipt by the client, on every trade frame of every client. Baseline in
the same run: one subscriber. Each scenario stops by itself within 60 seconds.
"""

import argparse
import asyncio
import http.client
import json
import os
import select
import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ENV, ROOT, fresh_database

PORT = 8762
TOPICS = ["trades.XSX:XS01", "book.XSX:XS01"]
SCENARIO_SECONDS = 60
WARMUP_SECONDS = 3.0
#: The stream process keeps its database connection (its consumers' database work
#: runs in one thread): without it every snapshot opens a new PostgreSQL
#: connection and 1,000 clients take over a minute to subscribe.
STREAM_ENV = dict(ENV, DATABASE_CONN_MAX_AGE="60")


# -- the client process --------------------------------------------------------------


class Tally:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.updates = 0
        self.snapshots = 0
        self.latencies: list[float] = []

    def frame(self, raw: str) -> None:
        now = time.time()
        if not self.start <= now < self.end:
            return
        if raw.startswith('{"type":"update"'):
            self.updates += 1
            if raw.startswith('{"type":"update","topic":"trades.'):
                at = raw.rindex('"executed_at":"') + 15
                executed_at = datetime.fromisoformat(raw[at : raw.index('"', at)])
                self.latencies.append(now - executed_at.timestamp())
        elif raw.startswith('{"type":"snapshot"'):
            self.snapshots += 1  # resent after a gap (messages were dropped)


async def clients_run(count: int, port: int, seconds: float) -> dict[str, object]:
    from websockets.asyncio.client import connect

    uri = f"ws://127.0.0.1:{port}/ws/v1/"
    opening = asyncio.Semaphore(50)

    async def open_one() -> object:
        async with opening:
            ws = await connect(
                uri,
                origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
                compression=None,
                open_timeout=30,
                max_queue=None,
            )
            await ws.send(json.dumps({"op": "subscribe", "topics": TOPICS}))
            snapshots = 0
            while snapshots < len(TOPICS):
                raw = await ws.recv()
                snapshots += str(raw).startswith('{"type":"snapshot"')
            return ws

    started = time.monotonic()
    sockets = await asyncio.gather(*(open_one() for _ in range(count)))
    connect_seconds = time.monotonic() - started
    start = time.time() + WARMUP_SECONDS
    tally = Tally(start, start + seconds)
    print("READY", flush=True)

    async def read(ws: object) -> None:
        async for raw in ws:  # type: ignore[attr-defined]
            tally.frame(raw)

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    await asyncio.sleep(WARMUP_SECONDS + seconds + 0.5)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)  # type: ignore[attr-defined]
    latencies = sorted(tally.latencies)
    return {
        "connect_seconds": connect_seconds,
        "updates": tally.updates,
        "snapshots": tally.snapshots,
        "trade_frames": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "max_ms": 1000 * latencies[-1] if latencies else None,
    }


def clients_main(args: argparse.Namespace) -> None:
    result = asyncio.run(clients_run(args.n, args.port, args.seconds))
    print(json.dumps(result), flush=True)


# -- the order flow ------------------------------------------------------------------


class OrderFlow(threading.Thread):
    """``rate`` orders per second: a 1-lot sell, then a 1-lot buy crossing it."""

    def __init__(self, rate: float) -> None:
        super().__init__(daemon=True)
        self.rate = rate
        self.stop = threading.Event()
        self.placed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db import connections

        from oms.services import OrderSpec, order_place
        from registry.api import accounts_of

        users = get_user_model().objects
        seller, buyer = users.get(username="alice"), users.get(username="bob")
        sells = [a.pk for a in accounts_of(seller)]
        buys = [a.pk for a in accounts_of(buyer)]
        due = time.monotonic()
        try:
            while not self.stop.is_set():
                is_sell = self.placed % 2 == 0
                user, accounts = (seller, sells) if is_sell else (buyer, buys)
                order_place(
                    user=user,
                    spec=OrderSpec(
                        account_id=accounts[(self.placed // 2) % len(accounts)],
                        symbol="XSX:XS01",
                        side="sell" if is_sell else "buy",
                        type="limit",
                        time_in_force="gtc",
                        price=Decimal("10.00"),
                        quantity=Decimal(1),
                    ),
                )
                self.placed += 1
                due += 1 / self.rate
                self.stop.wait(max(0.0, due - time.monotonic()))
        except BaseException as error:
            self.error = error
        finally:
            connections.close_all()


# -- the servers and scenarios -------------------------------------------------------


def wait_http(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def uvicorn_start(workers: int) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "uvicorn"),
        "config.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=STREAM_ENV, stdout=subprocess.DEVNULL
    )
    wait_http(PORT, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def scenario(count: int, rate: float, seconds: float) -> dict[str, object]:
    """Run ``count`` subscribers under the order flow; at most SCENARIO_SECONDS."""
    client = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "clients",
            "--n",
            str(count),
            "--port",
            str(PORT),
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    flow = OrderFlow(rate)
    deadline = time.monotonic() + SCENARIO_SECONDS
    try:
        assert client.stdout is not None
        readable, _, _ = select.select([client.stdout], [], [], SCENARIO_SECONDS)
        ready = client.stdout.readline().strip() if readable else "(timed out)"
        if ready != "READY":
            raise RuntimeError(f"clients did not connect: {ready!r}")
        flow.start()
        started = time.monotonic()
        output = client.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
        flow_seconds = time.monotonic() - started
    finally:
        flow.stop.set()
        if client.poll() is None:
            client.kill()
            client.wait()
    flow.join(10)
    if flow.error is not None:
        raise flow.error
    result = json.loads(output.strip().splitlines()[-1])
    result["orders_per_second"] = flow.placed / flow_seconds
    result["updates_per_second"] = result["updates"] / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="main", choices=["main", "clients"])
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.role == "clients":
        clients_main(args)
        return
    if WARMUP_SECONDS + args.seconds > SCENARIO_SECONDS - 20:
        parser.error(f"--seconds must leave room in {SCENARIO_SECONDS} s")
    fresh_database()
    matcher = subprocess.Popen(
        [sys.executable, "manage.py", "run_matcher", "--market", "XSX"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
    )
    counts = [1] + [int(n) for n in args.clients.split(",")]
    print(
        f"WebSocket fan-out, trades.XSX:XS01 + book.XSX:XS01 per client, "
        f"{args.rate:g} orders/s crossing flow, {args.seconds:g} s measured after "
        f"{WARMUP_SECONDS:g} s warm-up, PostgreSQL + Redis, {os.cpu_count()} cores, "
        "stream process with DATABASE_CONN_MAX_AGE=60"
    )
    print(
        f"{'uvicorn':>8} {'clients':>8} {'connect s':>10} {'orders/s':>9} "
        f"{'trades/s':>9} {'msgs/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'resyncs':>8}"
    )
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            server = uvicorn_start(workers)
            try:
                for count in counts:
                    r = scenario(count, args.rate, args.seconds)
                    label = "baseline" if count == 1 else ""
                    print(
                        f"{workers:>8} {count:>8} {r['connect_seconds']:>10.1f} "
                        f"{r['orders_per_second']:>9.1f} "
                        f"{r['trade_frames'] / count / args.seconds:>9.1f} "
                        f"{r['updates_per_second']:>10.0f} "
                        f"{fmt(r['p50_ms'])} {fmt(r['p99_ms'])} {fmt(r['max_ms'])} "
                        f"{r['snapshots']:>8} {label}",
                        flush=True,
                    )
            finally:
                stop(server)
    finally:
        stop(matcher)


def fmt(value: object) -> str:
    return f"{value:>8.1f}" if isinstance(value, float) else f"{'-':>8}"


if __name__ == "__main__":
    main()
