"""System checks of the registry's settings."""

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import CheckMessage, Error


def check_operator_timezone(**_: Any) -> list[CheckMessage]:
    """``OPERATOR_TIMEZONE`` names a time zone (the day of the withdrawal limits)."""
    name = settings.OPERATOR_TIMEZONE
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return [
            Error(
                f"OPERATOR_TIMEZONE {name!r} is not a time zone.",
                hint="Use an IANA name such as 'Australia/Sydney' or 'UTC'.",
                id="registry.E001",
            )
        ]
    return []
