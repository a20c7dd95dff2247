"""Django's PostgreSQL backend, connecting to the embedded server (started on the
first connection, see ``config.embedded_db``) through its unix socket."""

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base

from config.embedded_db import application_name, database_ensure, server_ensure


class DatabaseWrapper(base.DatabaseWrapper):
    """``ENGINE = "config.embedded_db"``; ``settings.EMBEDDED_PGDATA`` names the
    data folder. ``HOST`` and ``PORT`` come from the running server."""

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        status = server_ensure(Path(settings.EMBEDDED_PGDATA))
        # NAME None is a maintenance connection (the test runner's, to the
        # "postgres" database); any other needs its database to exist first.
        if self.settings_dict["NAME"]:
            database_ensure(status, params["dbname"])
        params["host"] = str(status.socket_dir)
        params["port"] = status.port
        params.setdefault("application_name", application_name(os.getpid()))
        return params
