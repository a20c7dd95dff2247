"""Serializer fields for the wire contract: decimals travel as strings, never floats."""

from decimal import Decimal, InvalidOperation
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(OpenApiTypes.STR)
class DecimalStringField(serializers.Field):
    """A decimal given as a JSON string such as ``"10.05"``.

    JSON numbers are refused (a float cannot carry an exact price), as are
    exponents, infinities and NaN.
    """

    default_error_messages = {
        "not_a_string": 'Send decimals as strings, e.g. "10.05", not JSON numbers.',
        "invalid": "{value!r} is not a decimal number.",
        "too_precise": "At most {places} decimal places.",
        "too_large": "At most {digits} digits before the decimal point.",
    }

    def __init__(
        self, *, max_places: int = 10, max_whole_digits: int = 20, **kwargs: Any
    ) -> None:
        self.max_places = max_places
        self.max_whole_digits = max_whole_digits
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if not isinstance(data, str):
            self.fail("not_a_string")
        text = data.strip()
        if not text or any(c not in "0123456789.-+" for c in text):
            self.fail("invalid", value=data)
        try:
            value = Decimal(text)
        except InvalidOperation:
            self.fail("invalid", value=data)
        if not value.is_finite():
            self.fail("invalid", value=data)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > self.max_places:
            self.fail("too_precise", places=self.max_places)
        if abs(value) >= Decimal(10) ** self.max_whole_digits:
            self.fail("too_large", digits=self.max_whole_digits)
        return value

    def to_representation(self, value: Decimal) -> str:
        return str(value)
