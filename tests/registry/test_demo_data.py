"""``manage.py demo_data``: what it creates, that a second run changes nothing, and
that the integration client it prints can really get a token and use the API."""

import base64
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from dateutil.easter import easter
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient

from exchange.models import Holiday, Market, Symbol
from registry.models import (
    Account,
    AccountAccess,
    Asset,
    AuditRecord,
    Balance,
    JournalEntry,
    Posting,
)
from tests.conftest import assert_ledger_balanced

pytestmark = pytest.mark.django_db

CLIENT_ID = "demo-integration"
CLIENT_SECRET = "demo-integration-secret"


def run_demo_data() -> str:
    out = StringIO()
    call_command("demo_data", stdout=out)
    return out.getvalue()


def database_state() -> dict[str, object]:
    """Everything the command may create or change, for before/after comparison."""
    User = get_user_model()
    return {
        "users": list(
            User.objects.order_by("pk").values_list(
                "pk", "username", "password", "is_staff", "is_superuser"
            )
        ),
        "assets": list(Asset.objects.order_by("pk").values_list("pk", "code", "scale")),
        "markets": list(Market.objects.order_by("pk").values()),
        "symbols": list(Symbol.objects.order_by("pk").values()),
        "holidays": list(
            Holiday.objects.order_by("pk").values_list("pk", "date", "name")
        ),
        "accounts": list(
            Account.objects.order_by("pk").values_list("pk", "number", "status")
        ),
        "access": list(AccountAccess.objects.order_by("pk").values_list("pk", "role")),
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "balances": list(
            Balance.objects.order_by("pk").values_list(
                "pk", "available", "held", "unsettled", "cost"
            )
        ),
        "audit": AuditRecord.objects.count(),
        "applications": list(
            Application.objects.order_by("pk").values_list(
                "pk", "client_id", "client_secret"
            )
        ),
    }


@pytest.fixture
def demo():
    return run_demo_data()


def test_demo_data_creates_the_demo_exchange(demo):
    market = Market.objects.get()
    assert (
        market.code,
        market.name,
        market.timezone,
        market.currency.code,
        market.state,
    ) == (
        "XSX",
        "Xchange Securities Exchange",
        "Australia/Sydney",
        "AUD",
        "open",
    )
    assert (market.maker_fee_bps, market.taker_fee_bps) == (Decimal(5), Decimal(10))
    aud = Asset.objects.get(code="AUD")
    assert (aud.kind, aud.scale) == ("currency", 2)

    symbols = list(Symbol.objects.select_related("asset").order_by("code"))
    assert [s.code for s in symbols] == [f"XS{n:02d}" for n in range(1, 11)]
    assert len({s.name for s in symbols}) == 10
    for s in symbols:
        assert (s.tick_size, s.lot_size, s.min_quantity, s.asset.scale, s.status) == (
            Decimal("0.01"),
            Decimal(1),
            Decimal(1),
            0,
            "active",
        )

    clients = Account.objects.filter(kind=Account.Kind.CLIENT).order_by("number")
    assert [a.number for a in clients] == [f"D{n:04d}" for n in range(1, 11)]
    owners = dict(
        AccountAccess.objects.filter(role="owner").values_list(
            "account__number", "user__username"
        )
    )
    assert owners == {f"D{n:04d}": "alice" if n <= 5 else "bob" for n in range(1, 11)}
    assert AccountAccess.objects.count() == 10

    for account in clients:
        positions = {
            b.asset.code: b
            for b in Balance.objects.filter(account=account).select_related("asset")
        }
        assert set(positions) == {"AUD"} | {f"XSX:XS{n:02d}" for n in range(1, 11)}
        assert positions["AUD"].available == Decimal("100000.00")
        for code, balance in positions.items():
            expected = Decimal("100000.00") if code == "AUD" else Decimal(10000)
            assert (balance.available, balance.held, balance.unsettled) == (
                expected,
                0,
                0,
            )
    assert_ledger_balanced()


def test_demo_users_and_their_logins(demo):
    User = get_user_model()
    admin, alice, bob, integration = (
        User.objects.get(username=name)
        for name in ("admin", "alice", "bob", "integration")
    )
    assert (
        admin.is_staff and admin.is_superuser and admin.check_password("admin-demo-1")
    )
    for client in (alice, bob):
        assert not client.is_staff and client.check_password("trade-demo-1")
    assert integration.is_staff and not integration.has_usable_password()
    assert Client().login(username="alice", password="trade-demo-1")
    # the command acts as admin: every audit record names it
    assert AuditRecord.objects.exists()
    assert set(AuditRecord.objects.values_list("actor__username", flat=True)) == {
        "admin"
    }


def test_demo_holidays_are_the_right_dates(demo):
    holidays = {h.date: h.name for h in Holiday.objects.filter(market__code="XSX")}
    for year in (2026, 2027):
        easter_sunday = easter(year)
        assert holidays[easter_sunday - timedelta(days=2)] == "Good Friday"
        assert holidays[easter_sunday + timedelta(days=1)] == "Easter Monday"
        for month, day, name in [
            (1, 1, "New Year's Day"),
            (1, 26, "Australia Day"),
            (4, 25, "Anzac Day"),
            (12, 25, "Christmas Day"),
            (12, 26, "Boxing Day"),
        ]:
            assert (
                holidays[Holiday.date.field.to_python(f"{year}-{month:02d}-{day:02d}")]
                == name
            )
    assert [d.isoformat() for d in sorted(holidays) if "additional" in holidays[d]] == [
        "2026-12-28",
        "2027-12-27",
        "2027-12-28",
    ]
    # additional days are weekdays; Good Friday is a Friday
    assert all(d.weekday() < 5 for d in holidays if "additional" in holidays[d])
    assert all(
        d.weekday() == 4 for d, name in holidays.items() if name == "Good Friday"
    )


def test_demo_oauth_applications(demo):
    integration = Application.objects.get(client_id=CLIENT_ID)
    assert (
        integration.name,
        integration.client_type,
        integration.authorization_grant_type,
    ) == (
        "Demo integration",
        "confidential",
        "client-credentials",
    )
    assert integration.user.username == "integration"
    # stored hashed, printed in plain text
    assert integration.client_secret != CLIENT_SECRET
    assert integration.client_secret.startswith(("pbkdf2", "md5", "argon2", "bcrypt"))
    assert CLIENT_SECRET in demo

    web = Application.objects.get(client_id="demo-web")
    assert (web.name, web.client_type, web.authorization_grant_type) == (
        "Demo web client",
        "public",
        "authorization-code",
    )
    assert web.redirect_uris == "http://127.0.0.1:8000/oauth/callback"
    assert (web.skip_authorization, web.algorithm) == (False, "")


def test_demo_data_prints_the_summary(demo):
    for text in [
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/admin/",
        "http://127.0.0.1:8000/api/docs/",
        "ws://127.0.0.1:8000/ws/v1/",
        "admin / admin-demo-1",
        "alice / trade-demo-1",
        "bob / trade-demo-1",
        "demo-integration",
        "demo-web",
        "grant_type=client_credentials http://127.0.0.1:8000/o/token/",
    ]:
        assert text in demo, text


def test_a_second_run_changes_nothing_and_says_so(demo):
    before = database_state()
    second = run_demo_data()
    assert "Nothing to do" in second
    assert "created" not in second.lower()
    assert database_state() == before
    assert (
        Market.objects.count(),
        Symbol.objects.count(),
        Account.objects.filter(kind=Account.Kind.CLIENT).count(),
        Holiday.objects.count(),
        Application.objects.count(),
        get_user_model().objects.count(),
    ) == (1, 10, 10, 19, 2, 4)
    # one deposit and ten issues per account, even after two runs
    assert JournalEntry.objects.filter(kind="deposit").count() == 10
    assert JournalEntry.objects.filter(kind="issue").count() == 100
    assert_ledger_balanced()


def basic_auth(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def client_credentials_token() -> str:
    response = Client().post(
        "/o/token/",
        {"grant_type": "client_credentials"},
        HTTP_AUTHORIZATION=basic_auth(CLIENT_ID, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer"
    return body["access_token"]


def test_the_integration_client_gets_a_token_at_the_real_token_endpoint(demo):
    token = client_credentials_token()
    assert token
    stored = AccessToken.objects.get(application__client_id=CLIENT_ID)
    assert set(stored.scopes) == {"read", "trade"}

    wrong = Client().post(
        "/o/token/",
        {"grant_type": "client_credentials"},
        HTTP_AUTHORIZATION=basic_auth(CLIENT_ID, "not-the-secret"),
    )
    assert wrong.status_code == 401


def test_django_oauth_toolkit_stores_no_user_on_client_credentials_tokens(demo):
    """DOT issues client-credentials tokens with ``user=None``; the API's
    authentication (config/auth.py) acts as the application's owner instead."""
    client_credentials_token()
    assert AccessToken.objects.get(application__client_id=CLIENT_ID).user is None


def bearer_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_the_integration_token_reads_markets_and_halts_one(demo):
    api = bearer_client(client_credentials_token())

    markets = api.get("/api/v1/markets")
    assert markets.status_code == 200, markets.json()
    assert [m["code"] for m in markets.json()] == ["XSX"]

    halted = api.post(
        "/api/v1/markets/XSX/halt", {"reason": "Integration test"}, format="json"
    )
    assert halted.status_code == 200, halted.json()
    assert halted.json()["state"] == "halted"
    assert Market.objects.get(code="XSX").state == "halted"
    audit = AuditRecord.objects.get(action="market_halt")
    assert audit.actor is not None
    assert (audit.actor.username, audit.reason) == ("integration", "Integration test")
