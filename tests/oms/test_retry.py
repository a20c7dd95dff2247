"""A service transaction that PostgreSQL aborts for a deadlock or serialization
failure is run again, then answered with 503 ``busy``; other errors pass through."""

import pytest
from django.db import OperationalError, connection, transaction

from oms.errors import OrderError
from oms.retry import ATTEMPTS, retry_on_conflict

pytestmark = pytest.mark.django_db(transaction=True)


def _raise_sqlstate(code: str) -> None:
    """Have PostgreSQL itself abort the statement with SQLSTATE ``code``."""
    sql = f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{code}'; END $$"
    with connection.cursor() as cursor:
        cursor.execute(sql)


def test_a_deadlocked_service_is_run_again_until_it_commits():
    attempts = []

    @retry_on_conflict
    def service() -> str:
        with transaction.atomic(durable=True):
            attempts.append(1)
            if len(attempts) < 3:
                _raise_sqlstate("40P01")
            return "done"

    assert service() == "done"
    assert len(attempts) == 3


def test_a_service_that_keeps_failing_on_serialization_answers_busy():
    attempts = []

    @retry_on_conflict
    def service() -> None:
        with transaction.atomic(durable=True):
            attempts.append(1)
            _raise_sqlstate("40001")

    with pytest.raises(OrderError) as error:
        service()
    assert (error.value.code, error.value.status) == ("busy", 503)
    assert len(attempts) == ATTEMPTS


def test_other_database_errors_are_not_retried():
    attempts = []

    @retry_on_conflict
    def service() -> None:
        with transaction.atomic(durable=True):
            attempts.append(1)
            _raise_sqlstate("55P03")  # lock_not_available

    with pytest.raises(OperationalError):
        service()
    assert len(attempts) == 1
