"""Fixtures of the fault suite: funded traders with bearer tokens, the web server."""

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from tests import factories
from tests.faults.harness import WebServer, access_token


@dataclass(frozen=True)
class Trader:
    user: Any
    account: Any
    token: str


def traders(symbol: Any, count: int, *, cash: str, units: str) -> list[Trader]:
    """``count`` users, each owning one account with ``cash`` and ``units`` of
    ``symbol``, and a bearer token."""
    made = []
    for _ in range(count):
        user = factories.user()
        holdings = {symbol: units} if Decimal(units) else {}
        account = factories.account(user, cash=cash, holdings=holdings)
        made.append(Trader(user, account, access_token(user)))
    return made


@pytest.fixture
def web(tmp_path) -> Iterator[WebServer]:
    """gunicorn on a free port of 127.0.0.1 against the test database."""
    server = WebServer(tmp_path / "web.log")
    yield server
    server.stop()
