"""The scan criteria language: a tokenizer, a recursive-descent parser and an
evaluator over level-1 summaries. Nothing here is ever ``eval``-ed.

Grammar (keywords and field names are case-insensitive)::

    criteria   := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := operand ("<" | "<=" | ">" | ">=" | "=" | "!=") operand
    operand    := FIELD | ["-" | "+"] NUMBER

A comparison needs at least one field (``last > 10.50``, ``best_bid >= vwap``).
Numbers are decimal literals (``10``, ``10.50``, ``.5``) compared exactly as
``Decimal``; no float is involved anywhere. A comparison with a missing value
(``last`` before the first trade, ``spread`` with one side of the book empty) is
false, so ``not (last > 10)`` holds for a symbol that never traded.

Errors raise :class:`CriteriaError` naming the 1-based position at fault, e.g.
``unknown field 'foo' at 1``. Criteria are at most 500 characters and nest (by
parentheses and ``not``) at most 20 levels, which bounds the recursion of both the
parser and the evaluator.
"""

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from marketdata.models import SecuritySummary

MAX_LENGTH = 500
MAX_DEPTH = 20

#: The level-1 fields criteria may name (the ``SecuritySummary`` columns and
#: properties, plus ``spread`` = best ask - best bid).
FIELDS = (
    "last",
    "change",
    "change_percent",
    "open",
    "high",
    "low",
    "previous_close",
    "volume",
    "value_traded",
    "trades",
    "vwap",
    "best_bid",
    "best_ask",
    "spread",
)

OPERATORS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}

KEYWORDS = frozenset({"and", "or", "not"})

Values = Mapping[str, Decimal | None]


class CriteriaError(ValueError):
    """Criteria that do not parse; ``position`` is 1-based (``None`` if the whole
    text is at fault)."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


# -- the syntax tree ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str


@dataclass(frozen=True, slots=True)
class Literal:
    value: Decimal


Operand = Field | Literal


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Not:
    operand: "Node"


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple["Node", ...]


Node = Compare | Not | And | Or


# -- tokens -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, name, op, punct, end
    text: str
    position: int  # 1-based

    def describe(self) -> str:
        return "end of criteria" if self.kind == "end" else repr(self.text)


# ASCII only: ``\d`` and ``\s`` would otherwise accept other scripts' digits and
# spaces, which Decimal() would happily read.
_TOKEN = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|!=|<|>|=)"
    r"|(?P<punct>[()+-])",
    re.ASCII,
)
_SPACE = frozenset(" \t\r\n")


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token."""
    tokens: list[Token] = []
    index = 0
    while index < len(text):
        if text[index] in _SPACE:
            index += 1
            continue
        match = _TOKEN.match(text, index)
        if match is None:
            raise CriteriaError(
                f"unexpected character {text[index]!r} at {index + 1}", index + 1
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append(Token(kind, match.group(), index + 1))
        index = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# -- the parser ------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def is_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.text.lower() == word

    def unexpected(self, token: Token) -> CriteriaError:
        return CriteriaError(
            f"unexpected {token.describe()} at {token.position}", token.position
        )

    def criteria(self) -> Node:
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token)
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.is_keyword("or"):
            self.take()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.is_keyword("and"):
            self.take()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def not_expr(self) -> Node:
        token = self.peek()
        if self.is_keyword("not"):
            self.take()
            with self.nested(token):
                return Not(self.not_expr())
        if token.text == "(" and token.kind == "punct":
            self.take()
            with self.nested(token):
                node = self.or_expr()
            closing = self.take()
            if closing.text != ")":
                raise CriteriaError(
                    f"expected ')' at {closing.position}", closing.position
                )
            return node
        return self.comparison()

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        """One level of ``(`` or ``not`` while its operand is parsed."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CriteriaError(
                f"criteria nest deeper than {MAX_DEPTH} levels at {token.position}",
                token.position,
            )
        try:
            yield
        finally:
            self.depth -= 1

    def comparison(self) -> Compare:
        start = self.peek().position
        left = self.operand()
        token = self.take()
        if token.kind != "op":
            if token.kind == "end":
                raise self.unexpected(token)
            raise CriteriaError(
                f"expected a comparison operator at {token.position}", token.position
            )
        right = self.operand()
        if isinstance(left, Literal) and isinstance(right, Literal):
            raise CriteriaError(f"a comparison needs a field at {start}", start)
        return Compare(token.text, left, right)

    def operand(self) -> Operand:
        token = self.take()
        if token.kind == "name":
            name = token.text.lower()
            if name in KEYWORDS:
                raise self.unexpected(token)
            if name not in FIELDS:
                raise CriteriaError(
                    f"unknown field {token.text!r} at {token.position}",
                    token.position,
                )
            return Field(name)
        if token.kind == "number":
            return Literal(Decimal(token.text))
        if token.text in ("-", "+") and token.kind == "punct":
            number = self.take()
            if number.kind != "number":
                raise CriteriaError(
                    f"expected a number after {token.text!r} at {number.position}",
                    number.position,
                )
            value = Decimal(number.text)
            return Literal(-value if token.text == "-" else value)
        if token.kind == "end":
            raise self.unexpected(token)
        raise CriteriaError(
            f"expected a field or a number at {token.position}", token.position
        )


@lru_cache(maxsize=1024)
def criteria_parse(text: str) -> Node:
    """The syntax tree of ``text``; raises :class:`CriteriaError`. Pure, so cached
    (the trees are immutable)."""
    if len(text) > MAX_LENGTH:
        raise CriteriaError(
            f"criteria are longer than {MAX_LENGTH} characters", MAX_LENGTH + 1
        )
    if not text.strip():
        raise CriteriaError("criteria are empty", 1)
    return _Parser(tokenize(text)).criteria()


def ordering_parse(text: str) -> tuple[str, bool]:
    """``"-change_percent"`` -> ``("change_percent", True)`` (descending); raises
    :class:`CriteriaError` for an unknown field."""
    is_descending = text.startswith("-")
    name = text[1:] if is_descending else text
    if name.lower() not in FIELDS:
        position = 2 if is_descending else 1
        raise CriteriaError(f"unknown field {name!r} at {position}", position)
    return name.lower(), is_descending


# -- evaluation ---------------------------------------------------------------------------


def summary_values(summary: SecuritySummary) -> dict[str, Decimal | None]:
    """The fields criteria may name, read once from ``summary``.

    Sums and differences are exact; the two ratios (``vwap``, ``change_percent``)
    are the model's own, so criteria, rankings and the wire agree.
    """
    bid, ask = summary.best_bid, summary.best_ask
    return {
        "last": summary.last,
        "change": summary.change,
        "change_percent": summary.change_percent,
        "open": summary.open,
        "high": summary.high,
        "low": summary.low,
        "previous_close": summary.previous_close,
        "volume": summary.volume,
        "value_traded": summary.value_traded,
        "trades": Decimal(summary.trades),
        "vwap": summary.vwap,
        "best_bid": bid,
        "best_ask": ask,
        "spread": None if bid is None or ask is None else ask - bid,
    }


def _operand_value(operand: Operand, values: Values) -> Decimal | None:
    if isinstance(operand, Literal):
        return operand.value
    return values[operand.name]


def criteria_evaluate(node: Node, values: Values) -> bool:
    """Does a symbol with these :func:`summary_values` meet the criteria?"""
    if isinstance(node, Compare):
        left = _operand_value(node.left, values)
        right = _operand_value(node.right, values)
        if left is None or right is None:
            return False
        return OPERATORS[node.op](left, right)
    if isinstance(node, Not):
        return not criteria_evaluate(node.operand, values)
    if isinstance(node, And):
        return all(criteria_evaluate(operand, values) for operand in node.operands)
    return any(criteria_evaluate(operand, values) for operand in node.operands)


def criteria_match(criteria: str, summary: SecuritySummary) -> bool:
    """Does ``summary`` meet ``criteria`` (text)? Raises :class:`CriteriaError`."""
    return criteria_evaluate(criteria_parse(criteria), summary_values(summary))


# -- formatting -----------------------------------------------------------------------------


def _operand_text(operand: Operand) -> str:
    if isinstance(operand, Field):
        return operand.name
    return format(operand.value, "f")


def criteria_format(node: Node) -> str:
    """Canonical text for a tree: ``criteria_parse(criteria_format(t)) == t``."""

    def child(operand: Node) -> str:
        text = criteria_format(operand)
        return f"({text})" if isinstance(operand, And | Or) else text

    if isinstance(node, Compare):
        return f"{_operand_text(node.left)} {node.op} {_operand_text(node.right)}"
    if isinstance(node, Not):
        return f"not {child(node.operand)}"
    joiner = " and " if isinstance(node, And) else " or "
    return joiner.join(child(operand) for operand in node.operands)
