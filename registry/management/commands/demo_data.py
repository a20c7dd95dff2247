"""``manage.py demo_data``: a ready-to-trade demo exchange.

Creates, through the services and audited as the staff user ``admin``: the AUD
currency, the XSX market with ten symbols and its 2026-2027 holidays, an ASX-like
session timetable that is NOT followed (the schedule is off, so XSX stays open at
any hour for the demo), a tick table (used by XS10), the users
``admin``, ``alice``, ``bob`` and ``integration``, ten funded client accounts and
two OAuth2 applications. Idempotent: whatever already exists is left as it is, so
a second run changes nothing and says so.
"""

import os
from collections import Counter
from datetime import date, time
from decimal import Decimal
from typing import Any, TypedDict

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from oauth2_provider.models import Application

from exchange.models import Holiday, Market, MarketSession, Symbol, TickTable
from exchange.services import (
    market_create,
    market_timetable_set,
    symbol_issue,
    tick_table_create,
)
from registry.models import Account, AccountAccess, Asset, JournalEntry
from registry.services import (
    account_access_grant,
    account_open,
    audit_record,
    cash_deposit,
    security_issue,
)

CURRENCY = ("AUD", "Australian dollar", 2)


class _MarketSpec(TypedDict):
    code: str
    name: str
    timezone_name: str
    maker_fee_bps: Decimal
    taker_fee_bps: Decimal


class _TickTableSpec(TypedDict):
    name: str
    description: str
    bands: list[tuple[Decimal, Decimal]]


MARKET: _MarketSpec = {
    "code": "XSX",
    "name": "Xchange Securities Exchange",
    "timezone_name": "Australia/Sydney",
    "maker_fee_bps": Decimal(5),
    "taker_fee_bps": Decimal(10),
}
SYMBOLS = [
    ("XS01", "Southern Cross Minerals Limited"),
    ("XS02", "Harbourside Banking Group Limited"),
    ("XS03", "Coral Sea Energy Limited"),
    ("XS04", "Outback Rail and Freight Limited"),
    ("XS05", "Eucalypt Pharmaceuticals Limited"),
    ("XS06", "Tasman Telecommunications Limited"),
    ("XS07", "Murray Valley Agriculture Limited"),
    ("XS08", "Pilbara Iron Holdings Limited"),
    ("XS09", "Kookaburra Software Limited"),
    ("XS10", "Reef and Range Insurance Group Limited"),
]
#: New South Wales public holidays (the market is in Sydney). A holiday falling on
#: a weekend is listed on its date; where NSW adds a weekday in lieu, that day is
#: listed too ("additional day"). Anzac Day has no day in lieu in NSW.
HOLIDAYS = [
    (date(2026, 1, 1), "New Year's Day"),
    (date(2026, 1, 26), "Australia Day"),
    (date(2026, 4, 3), "Good Friday"),
    (date(2026, 4, 6), "Easter Monday"),
    (date(2026, 4, 25), "Anzac Day"),
    (date(2026, 6, 8), "King's Birthday"),
    (date(2026, 12, 25), "Christmas Day"),
    (date(2026, 12, 26), "Boxing Day"),
    (date(2026, 12, 28), "Boxing Day (additional day)"),
    (date(2027, 1, 1), "New Year's Day"),
    (date(2027, 1, 26), "Australia Day"),
    (date(2027, 3, 26), "Good Friday"),
    (date(2027, 3, 29), "Easter Monday"),
    (date(2027, 4, 25), "Anzac Day"),
    (date(2027, 6, 14), "King's Birthday"),
    (date(2027, 12, 25), "Christmas Day"),
    (date(2027, 12, 26), "Boxing Day"),
    (date(2027, 12, 27), "Christmas Day (additional day)"),
    (date(2027, 12, 28), "Boxing Day (additional day)"),
]

#: ASX-like local times; staff can turn the schedule on in the admin.
TIMETABLE = [
    (time(7, 0), Market.State.PRE_OPEN),
    (time(9, 59, 30), Market.State.OPENING_AUCTION),
    (time(10, 0), Market.State.OPEN),
    (time(16, 0), Market.State.CLOSING_AUCTION),
    (time(16, 10), Market.State.CLOSED),
]
TICK_TABLE: _TickTableSpec = {
    "name": "XSX equities",
    "description": "1c below $50, 5c from $50, 10c from $100.",
    "bands": [
        (Decimal(0), Decimal("0.01")),
        (Decimal(50), Decimal("0.05")),
        (Decimal(100), Decimal("0.10")),
    ],
}
TICK_TABLE_SYMBOL = "XS10"

ADMIN = ("admin", "admin-demo-1")
CLIENT_PASSWORD = "trade-demo-1"  # noqa: S105 (demo login, printed on start)
INTEGRATION_USER = "integration"
#: (account number, owner): alice owns D0001-D0005, bob D0006-D0010.
ACCOUNTS = [(f"D{n:04d}", "alice" if n <= 5 else "bob") for n in range(1, 11)]
CASH = Decimal("100000.00")
UNITS = Decimal(10000)
FUNDING_REASON = "Demo data"

INTEGRATION_APP = {
    "client_id": "demo-integration",
    "client_secret": "demo-integration-secret",
    "name": "Demo integration",
}
WEB_APP = {
    "client_id": "demo-web",
    "name": "Demo web client",
    "redirect_uris": "http://127.0.0.1:8000/oauth/callback",
}


class Command(BaseCommand):
    help = "Create the demo exchange: market XSX, symbols, users, funded accounts, OAuth clients."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=int(os.environ.get("PORT") or 8000),
            help="Port shown in the summary URLs (default: $PORT or 8000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.created: Counter[str] = Counter()
        self.notes: list[str] = []
        with transaction.atomic():
            admin = self._user(ADMIN[0], ADMIN[1], staff=True, superuser=True)
            clients = {
                name: self._user(name, CLIENT_PASSWORD) for name in ("alice", "bob")
            }
            integration = self._user(INTEGRATION_USER, None, staff=True)
            currency = self._currency(admin)
            market = self._market(currency, admin)
            self._timetable(market, admin)
            tick_table = self._tick_table(admin)
            symbols = [
                self._symbol(
                    market,
                    code,
                    name,
                    admin,
                    tick_table if code == TICK_TABLE_SYMBOL else None,
                )
                for code, name in SYMBOLS
            ]
            self._holidays(market, admin)
            for number, owner in ACCOUNTS:
                self._account(number, clients[owner], currency, symbols, admin)
            self._integration_app(integration)
            self._web_app(admin)
        self._summary(options["port"], market)

    # -- users -----------------------------------------------------------------

    def _user(
        self,
        username: str,
        password: str | None,
        *,
        staff: bool = False,
        superuser: bool = False,
    ) -> User:
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user = user_model(username=username, is_staff=staff, is_superuser=superuser)
            if password is None:
                user.set_unusable_password()
            else:
                user.set_password(password)
            user.save()
            self.created["users"] += 1
            return user
        if (staff and not user.is_staff) or (superuser and not user.is_superuser):
            user.is_staff = user.is_staff or staff
            user.is_superuser = user.is_superuser or superuser
            user.save(update_fields=["is_staff", "is_superuser"])
            self.created["user permission fixes"] += 1
        if password is not None and not user.check_password(password):
            self.notes.append(
                f"User {username!r} has another password; it was not reset."
            )
        return user

    # -- exchange --------------------------------------------------------------

    def _currency(self, admin: User) -> Asset:
        code, name, scale = CURRENCY
        asset, created = Asset.objects.get_or_create(
            code=code,
            defaults={"name": name, "kind": Asset.Kind.CURRENCY, "scale": scale},
        )
        if created:
            audit_record(
                actor=admin,
                action="asset_create",
                target=asset,
                reason=FUNDING_REASON,
                changes={"code": code, "kind": asset.kind, "scale": scale},
            )
            self.created["currencies"] += 1
        return asset

    def _market(self, currency: Asset, admin: User) -> Market:
        market = (
            Market.objects.select_related("currency")
            .filter(code=MARKET["code"])
            .first()
        )
        if market is None:
            market = market_create(
                **MARKET, currency=currency, state=Market.State.OPEN, acting_user=admin
            )
            self.created["markets"] += 1
        return market

    def _timetable(self, market: Market, admin: User) -> None:
        if MarketSession.objects.filter(market=market).exists():
            return
        market_timetable_set(market=market, entries=TIMETABLE, acting_user=admin)
        self.created["session timetables"] += 1

    def _tick_table(self, admin: User) -> TickTable:
        table = TickTable.objects.filter(name=TICK_TABLE["name"]).first()
        if table is None:
            table = tick_table_create(**TICK_TABLE, acting_user=admin)
            self.created["tick tables"] += 1
        return table

    def _symbol(
        self,
        market: Market,
        code: str,
        name: str,
        admin: User,
        tick_table: TickTable | None = None,
    ) -> Symbol:
        symbol = (
            Symbol.objects.select_related("asset", "currency")
            .filter(market=market, code=code)
            .first()
        )
        if symbol is None:
            symbol = symbol_issue(
                market=market,
                code=code,
                name=name,
                tick_size=Decimal("0.01"),
                lot_size=Decimal(1),
                scale=0,
                tick_table=tick_table,
                acting_user=admin,
            )
            self.created["symbols"] += 1
        return symbol

    def _holidays(self, market: Market, admin: User) -> None:
        for day, name in HOLIDAYS:
            holiday, created = Holiday.objects.get_or_create(
                market=market, date=day, defaults={"name": name}
            )
            if created:
                audit_record(
                    actor=admin,
                    action="holiday_create",
                    target=holiday,
                    changes={
                        "market": market.code,
                        "date": day.isoformat(),
                        "name": name,
                    },
                )
                self.created["holidays"] += 1

    # -- registry --------------------------------------------------------------

    def _account(
        self,
        number: str,
        owner: User,
        currency: Asset,
        symbols: list[Symbol],
        admin: User,
    ) -> Account:
        account = Account.objects.filter(number=number).first()
        if account is None:
            account = account_open(
                number=number,
                name=f"{owner.get_username().capitalize()} demo account {number}",
                currency=currency,
                acting_user=admin,
            )
            self.created["accounts"] += 1
        has_access = AccountAccess.objects.filter(
            account=account, user=owner, role=AccountAccess.Role.OWNER
        ).exists()
        if not has_access:
            account_access_grant(
                account=account,
                user=owner,
                role=AccountAccess.Role.OWNER,
                acting_user=admin,
            )
            self.created["account owners"] += 1
        if not self._funded(account, currency, JournalEntry.Kind.DEPOSIT):
            cash_deposit(
                account=account,
                asset=currency,
                amount=CASH,
                acting_user=admin,
                reason=FUNDING_REASON,
            )
            self.created["cash deposits"] += 1
        for symbol in symbols:
            if not self._funded(account, symbol.asset, JournalEntry.Kind.ISSUE):
                security_issue(
                    account=account,
                    asset=symbol.asset,
                    amount=UNITS,
                    acting_user=admin,
                    reason=FUNDING_REASON,
                )
                self.created["security issues"] += 1
        return account

    @staticmethod
    def _funded(account: Account, asset: Asset, kind: str) -> bool:
        """Has the demo already credited ``asset`` to ``account`` (once is enough,
        whatever has been traded since)?"""
        return JournalEntry.objects.filter(
            kind=kind,
            reason=FUNDING_REASON,
            postings__account=account,
            postings__asset=asset,
        ).exists()

    # -- OAuth2 ----------------------------------------------------------------

    def _integration_app(self, owner: User) -> None:
        app = Application.objects.filter(client_id=INTEGRATION_APP["client_id"]).first()
        plain = INTEGRATION_APP["client_secret"]
        if app is None:
            # DOT hashes client_secret on save: give it the plain secret beforehand.
            app = Application(
                client_id=INTEGRATION_APP["client_id"],
                client_secret=plain,
                hash_client_secret=True,
                name=INTEGRATION_APP["name"],
                user=owner,
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
                skip_authorization=False,
                algorithm=Application.NO_ALGORITHM,
            )
            app.full_clean()
            app.save()
            self.created["OAuth applications"] += 1
            return
        matches = (
            check_password(plain, app.client_secret)
            if app.hash_client_secret
            else app.client_secret == plain
        )
        if not matches:
            self.notes.append(
                f"OAuth client {app.client_id!r} has another secret; it was not reset."
            )

    def _web_app(self, owner: User) -> None:
        if Application.objects.filter(client_id=WEB_APP["client_id"]).exists():
            return
        app = Application(
            client_id=WEB_APP["client_id"],
            name=WEB_APP["name"],
            user=owner,
            client_type=Application.CLIENT_PUBLIC,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=WEB_APP["redirect_uris"],
            skip_authorization=False,
            algorithm=Application.NO_ALGORITHM,
        )
        app.full_clean()
        app.save()
        self.created["OAuth applications"] += 1

    # -- output ----------------------------------------------------------------

    def _summary(self, port: int, market: Market) -> None:
        out = self.stdout
        if self.created:
            made = ", ".join(f"{what}: {count}" for what, count in self.created.items())
            out.write(self.style.SUCCESS(f"Demo data created ({made})."))
        else:
            out.write(
                self.style.SUCCESS("Nothing to do: the demo data is already in place.")
            )
        for note in self.notes:
            out.write(self.style.WARNING(note))
        base = f"http://127.0.0.1:{port}"
        secret = INTEGRATION_APP["client_secret"]
        client_id = INTEGRATION_APP["client_id"]
        lines = [
            "",
            f"Market {market.code} ({market.name}) is {market.state}; "
            f"symbols {SYMBOLS[0][0]}..{SYMBOLS[-1][0]}.",
            "",
            f"  Web app     {base}/",
            f"  Admin       {base}/admin/",
            f"  API docs    {base}/api/docs/",
            f"  WebSocket   ws://127.0.0.1:{port}/ws/v1/",
            "",
            "Logins:",
            f"  {ADMIN[0]} / {ADMIN[1]}  (staff, superuser)",
            f"  alice / {CLIENT_PASSWORD}  (owner of D0001..D0005)",
            f"  bob / {CLIENT_PASSWORD}  (owner of D0006..D0010)",
            "",
            "OAuth2 clients:",
            f"  client credentials:  client_id {client_id}  client_secret {secret}"
            f"  (acts as staff user {INTEGRATION_USER!r})",
            f"  authorization code + PKCE (public):  client_id {WEB_APP['client_id']}"
            f"  redirect_uri {WEB_APP['redirect_uris']}",
            "",
            "Get a token:",
            f"  curl -s -u {client_id}:{secret} -d grant_type=client_credentials {base}/o/token/",
        ]
        out.write("\n".join(lines))
