"""``manage.py embedded_db start|stop|status``: the embedded profile's PostgreSQL.

Any command that touches the database starts the server by itself and leaves it
running, and ``serve`` stops it on exit; this command is for doing either by hand
(e.g. after ``migrate`` alone, or to stop it while a ``run_matcher`` still runs).
"""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config import embedded_db


class Command(BaseCommand):
    help = "Start, stop or show the embedded profile's PostgreSQL server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["start", "stop", "status"])

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PROFILE != "embedded":
            raise CommandError("DATABASE_URL is set: the embedded database is unused.")
        pgdata = settings.EMBEDDED_PGDATA
        action = options["action"]
        if action == "start":
            status = embedded_db.server_ensure(pgdata)
            self.stdout.write(f"running (pid {status.pid}) in {pgdata}")
        elif action == "stop":
            stopped = embedded_db.server_stop(pgdata)
            self.stdout.write("stopped" if stopped else "not running")
        else:
            current = embedded_db.server_status(pgdata)
            if current is None:
                self.stdout.write(f"not running ({pgdata})")
            else:
                self.stdout.write(
                    f"running (pid {current.pid}) in {pgdata}, socket "
                    f"{current.socket_dir}/.s.PGSQL.{current.port}"
                )
