"""Shared set-up for the benchmarks: a fresh ``xchange_bench`` database with demo data."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# BENCH_DB_NAME / BENCH_REDIS_URL keep runs on one machine (several checkouts) apart.
DB_NAME = os.environ.get("BENCH_DB_NAME", "xchange_bench")
ENV = dict(
    os.environ,
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
    DJANGO_SETTINGS_MODULE="config.settings",
    MATCHER_IN_PROCESS="false",
    LOG_LEVEL="WARNING",
)


def fresh_database(db_name: str = DB_NAME, env: dict[str, str] = ENV) -> None:
    """Drop and recreate the bench database (``db_name``, reached with ``env``),
    migrate, load the demo data, and set up Django in this process against it."""
    psql = ["-h", "127.0.0.1", "-U", "postgres"]
    subprocess.run(["dropdb", *psql, "--if-exists", db_name], check=True)
    subprocess.run(["createdb", *psql, db_name], check=True)
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [py, "manage.py", "demo_data"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
