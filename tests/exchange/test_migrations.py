"""The data migration that gives existing markets the standard trading states,
and its reverse."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("exchange", "0006_trading_states")]
AFTER = [("exchange", "0007_trading_states_default")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_existing_markets_get_the_standard_states_and_lose_them_on_reverse():
    try:
        apps = migrate(BEFORE)
        Asset = apps.get_model("registry", "Asset")
        Market = apps.get_model("exchange", "Market")
        TradingState = apps.get_model("exchange", "TradingState")
        aud = Asset.objects.create(code="AUD", name="AUD", kind="currency", scale=2)
        market = Market.objects.create(code="XSX", name="X", currency=aud)
        TradingState.objects.create(market=market, code="lunch", name="Lunch")

        apps = migrate(AFTER)
        TradingState = apps.get_model("exchange", "TradingState")
        states = TradingState.objects.filter(market_id=market.pk).order_by("code")
        assert [
            (s.code, s.allows_place, s.allows_cancel, s.allows_match, s.is_auction)
            for s in states
        ] == [
            ("closed", False, True, False, False),
            ("closing_auction", True, True, False, True),
            ("halted", False, True, False, False),
            ("lunch", False, True, False, False),
            ("open", True, True, True, False),
            ("opening_auction", False, False, False, True),
            ("pre_open", True, True, False, True),
        ]

        apps = migrate(BEFORE)
        TradingState = apps.get_model("exchange", "TradingState")
        assert list(TradingState.objects.values_list("code", flat=True)) == ["lunch"]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
