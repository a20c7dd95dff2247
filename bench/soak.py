"""The fault suite at full scale (``make soak``), then its figures as a table.

Usage: .venv/bin/python bench/soak.py [--scale full|ci] [--table-only] [pytest args]

Runs ``tests/faults`` with ``FAULT_SCALE`` set (``full``: the issue's figures, e.g.
5,000 orders from 200 accounts with a SIGKILL every 10 s; ``ci``: the reduced scale
the normal test run uses), one test at a time (``-n 0``), against the database and
Redis of ``DATABASE_URL`` / ``REDIS_URL`` (pytest-django creates its own
``test_...`` database from them). Every test writes its figures to
``var/faults/<name>.json``; the table printed at the end (Markdown) is the one
docs/reliability.md carries. ``--table-only`` prints the table of the last run.
"""

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "var" / "faults"

Row = tuple[str, str, str, str]


def _kill_storm(f: dict[str, Any]) -> Row:
    return (
        f"SIGKILL of the owning `run_matcher` every {f['kill_every_s']} s "
        f"({f['kills']} kills), a standby takes over",
        f"{f['orders_sent']} orders + cancels over REST (gunicorn) "
        f"from {f['accounts']} accounts",
        "0 lost acknowledged orders/cancels, 0 duplicate fills, invariants, "
        "rebuilt book = replay",
        f"takeover (kill to first batch of the new owner) median "
        f"{f['takeover_median_s']} s, max {f['takeover_max_s']} s; lock released "
        f"after {max(f['sessions_released_s'], default='-')} s at most; "
        f"{f['acknowledged_orders']} orders and {f['acknowledged_cancels']} "
        f"cancels acknowledged; {f['client_errors']} client errors",
    )


def _double_spend(f: dict[str, Any]) -> Row:
    return (
        "parallel requests for the whole balance",
        f"{f['parallel']} parallel buy orders and withdrawals x {f['rounds']} rounds",
        "at most one wins a round, available never < 0, held exact",
        f"{f['overspends']} overspends; {f['wins']} wins, "
        f"{f['refusals_422']} refused 422; {f['unexpected']} unexpected answers",
    )


def _duplicates(f: dict[str, Any]) -> Row:
    return (
        "concurrent resubmissions, some with an altered body",
        f"{f['submissions']} submissions over {f['keys']} `client_order_id`s",
        "one order per id, 409 for every altered body, no extra hold",
        f"{f['orders']} orders; {f['conflicts_409']} of {f['altered_bodies']} "
        f"altered bodies got 409; {f['wrong_answers']} wrong answers; extra hold "
        f"{f['extra_hold']}",
    )


def _storms(f: dict[str, Any]) -> Row:
    return (
        "cancel-all, amend, cancel and place against accounts being matched",
        f"{f['operations']} operations from 8 threads over {f['accounts']} accounts",
        "0 5xx/deadlock errors to clients, reservations exact, rebuilt book = replay",
        f"{f['server_errors']} server errors, {f['unexpected']} unexpected answers "
        f"in {f['elapsed_s']} s",
    )


def _session_worker(f: dict[str, Any]) -> Row:
    return (
        f"`pg_terminate_backend` on the worker's sessions ({f['terminations']} times)",
        "orders over REST from 4 clients",
        "same process resumes, one owner, nothing lost or processed twice, invariants",
        f"{f['sessions_terminated']} sessions killed; market re-taken "
        f"{f['ownerships'] - 1} times; {f['acknowledged_orders']} orders "
        f"acknowledged; {f['client_errors']} client errors",
    )


def _session_web(f: dict[str, Any]) -> Row:
    return (
        "`pg_terminate_backend` on the web server's sessions "
        f"({f['terminations']} times)",
        f"{f['orders_sent']} orders over REST, retried on failure with the same "
        "`client_order_id`",
        "no 500, no order placed twice, server resumes without restart, invariants",
        f"{f['server_errors']} server errors, {f['retries']} retries; "
        f"{f['orders_stored']} orders stored, {f['acknowledged_orders']} acknowledged",
    )


ROWS: dict[str, Callable[[dict[str, Any]], Row]] = {
    "kill_storm": _kill_storm,
    "double_spend": _double_spend,
    "duplicates": _duplicates,
    "cancel_amend_storms": _storms,
    "session_faults_worker": _session_worker,
    "session_faults_web": _session_web,
}


def table() -> str:
    lines = [
        "| fault injected | load | checked | figure |",
        "|---|---|---|---|",
    ]
    for name, row in ROWS.items():
        path = FIGURES / f"{name}.json"
        if not path.exists():
            lines.append(f"| {name} | - | - | not run (or failed before its figures) |")
            continue
        figures = json.loads(path.read_text())
        cells = row(figures)
        lines.append(f"| {' | '.join(cells)} ({figures['scale']} scale) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=["full", "ci"], default="full")
    parser.add_argument("--table-only", action="store_true")
    args, pytest_args = parser.parse_known_args()
    status = 0
    if not args.table_only:
        for old in FIGURES.glob("*.json"):
            old.unlink()
        env = dict(os.environ, FAULT_SCALE=args.scale)
        command = [sys.executable, "-m", "pytest", "tests/faults", "-n", "0", "-q"]
        status = subprocess.run(
            [*command, "-p", "no:cacheprovider", *pytest_args],
            cwd=ROOT,
            env=env,
        ).returncode
    print()
    print(table())
    return status


if __name__ == "__main__":
    sys.exit(main())
