"""The scan criteria language: parsing, precedence, exact evaluation and errors."""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from marketdata.models import SecuritySummary
from marketdata.scan_criteria import (
    FIELDS,
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Compare,
    CriteriaError,
    Field,
    Literal,
    Not,
    Or,
    criteria_evaluate,
    criteria_format,
    criteria_match,
    criteria_parse,
    ordering_parse,
    summary_values,
)


def compare(field: str, op: str, value: str) -> Compare:
    return Compare(op, Field(field), Literal(Decimal(value)))


def summary(**fields: str | int | None) -> SecuritySummary:
    return SecuritySummary(
        **{
            name: Decimal(value) if isinstance(value, str) else value
            for name, value in fields.items()
        }
    )


# -- structure and precedence ---------------------------------------------------------


def test_and_binds_tighter_than_or():
    assert criteria_parse("last > 1 or volume > 2 and trades > 3") == Or(
        (
            compare("last", ">", "1"),
            And((compare("volume", ">", "2"), compare("trades", ">", "3"))),
        )
    )


def test_precedence_decides_the_result():
    given_summary = summary(last="2", volume="0", trades=0)

    assert criteria_match("last > 1 or volume > 2 and trades > 3", given_summary)
    assert not criteria_match("(last > 1 or volume > 2) and trades > 3", given_summary)


def test_not_binds_tighter_than_and():
    assert criteria_parse("not last > 1 and volume > 2") == And(
        (Not(compare("last", ">", "1")), compare("volume", ">", "2"))
    )


def test_parentheses_group_first():
    assert criteria_parse("(last > 1 or volume > 2) and trades > 3") == And(
        (
            Or((compare("last", ">", "1"), compare("volume", ">", "2"))),
            compare("trades", ">", "3"),
        )
    )


def test_a_chain_of_the_same_connective_is_one_node():
    assert criteria_parse("last > 1 and high > 2 and low > 3") == And(
        (compare("last", ">", "1"), compare("high", ">", "2"), compare("low", ">", "3"))
    )


def test_not_of_a_group_and_double_negation():
    assert criteria_parse("not (last > 1 or not volume = 0)") == Not(
        Or((compare("last", ">", "1"), Not(compare("volume", "=", "0"))))
    )


def test_keywords_and_fields_are_case_insensitive():
    assert criteria_parse(
        "LAST > 1 AnD NOT Volume = 0 Or trades >= 2"
    ) == criteria_parse("last > 1 and not volume = 0 or trades >= 2")


def test_two_fields_can_be_compared_and_a_number_may_come_first():
    assert criteria_parse("best_bid < best_ask and 10 <= last") == And(
        (
            Compare("<", Field("best_bid"), Field("best_ask")),
            Compare("<=", Literal(Decimal("10")), Field("last")),
        )
    )


def test_signed_and_bare_fraction_literals():
    assert criteria_parse("change < -1.5 or change > +.5") == Or(
        (compare("change", "<", "-1.5"), compare("change", ">", "0.5"))
    )


def test_spacing_is_optional_around_operators_and_parentheses():
    assert criteria_parse("(last>10.50)and(volume!=0)") == And(
        (compare("last", ">", "10.50"), compare("volume", "!=", "0"))
    )


# -- evaluation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("<", (True, False, False)),
        ("<=", (True, True, False)),
        (">", (False, False, True)),
        (">=", (False, True, True)),
        ("=", (False, True, False)),
        ("!=", (True, False, True)),
    ],
)
def test_each_operator_compares_exactly(op, expected):
    results = tuple(
        criteria_match(f"last {op} 10.50", summary(last=last))
        for last in ("10.49", "10.50", "10.51")
    )

    assert results == expected


def test_a_missing_value_makes_every_comparison_false():
    never_traded = summary(last=None, previous_close="10.00")

    assert [
        criteria_match(text, never_traded)
        for text in (
            "last > 0",
            "last <= 0",
            "last != 1",
            "change = 0",
            "change_percent < 0",
            "spread >= 0",
            "vwap > 0",
            "not last > 0",
        )
    ] == [False, False, False, False, False, False, False, True]


def test_derived_fields_are_computed_exactly_in_decimal():
    given_summary = summary(
        last="10.30",
        previous_close="10.00",
        volume="3",
        value_traded="31.00",
        best_bid="10.20",
        best_ask="10.35",
        trades=3,
    )

    assert [
        criteria_match(text, given_summary)
        for text in (
            "change = 0.3",  # 10.3 - 10.0 in binary floats is 0.30000000000000071
            "change_percent = 3",
            "spread = 0.15",
            "vwap > 10.333333333",
            "vwap < 10.333333334",
            "trades = 3 and volume = 3.000",
            "last = 10.3",
        )
    ] == [True, True, True, True, True, True, True]


def test_a_zero_previous_close_has_no_change_percent():
    assert not criteria_match(
        "change_percent > 0 or change_percent <= 0",
        summary(last="1", previous_close="0"),
    )
    assert criteria_match("change = 1", summary(last="1", previous_close="0"))


def test_summary_values_name_every_field():
    assert sorted(summary_values(SecuritySummary())) == sorted(FIELDS)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("foo > 1", "unknown field 'foo' at 1", 1),
        ("last > 1 and Foo < 2", "unknown field 'Foo' at 14", 14),
        ("last >", "unexpected end of criteria at 7", 7),
        ("last 5", "expected a comparison operator at 6", 6),
        ("(last > 1", "expected ')' at 10", 10),
        ("last > 1)", "unexpected ')' at 9", 9),
        ("last > 1 $", "unexpected character '$' at 10", 10),
        ("1 < 2", "a comparison needs a field at 1", 1),
        ("last > 1 < 2", "unexpected '<' at 10", 10),
        ("last > - last", "expected a number after '-' at 10", 10),
        ("last == 1", "expected a field or a number at 7", 7),
        ("last > 1 and", "unexpected end of criteria at 13", 13),
        ("last > 1 and or volume > 1", "unexpected 'or' at 14", 14),
        ("()", "expected a field or a number at 2", 2),
        ("not", "unexpected end of criteria at 4", 4),
        ("last > 1e5", "unexpected 'e5' at 9", 9),
        ("last > 1.", "unexpected character '.' at 9", 9),
        ("last > \u0661", "unexpected character '\u0661' at 8", 8),
        ("", "criteria are empty", 1),
        ("   ", "criteria are empty", 1),
    ],
)
def test_errors_name_the_position_at_fault(text, message, position):
    with pytest.raises(CriteriaError) as raised:
        criteria_parse(text)

    assert (str(raised.value), raised.value.position) == (message, position)


def test_parentheses_nest_up_to_the_limit():
    deepest = "(" * MAX_DEPTH + "last > 1" + ")" * MAX_DEPTH

    assert criteria_parse(deepest) == compare("last", ">", "1")
    with pytest.raises(CriteriaError) as raised:
        criteria_parse("(" + deepest + ")")
    assert str(raised.value) == "criteria nest deeper than 20 levels at 21"


def test_not_counts_towards_the_nesting_limit():
    assert criteria_parse("not " * MAX_DEPTH + "last > 1") is not None
    with pytest.raises(CriteriaError) as raised:
        criteria_parse("not " * (MAX_DEPTH + 1) + "last > 1")
    assert str(raised.value) == "criteria nest deeper than 20 levels at 81"


def test_criteria_are_at_most_500_characters():
    longest = "last > 1".ljust(MAX_LENGTH)

    assert criteria_parse(longest) == compare("last", ">", "1")
    with pytest.raises(CriteriaError) as raised:
        criteria_parse(longest + " ")
    assert (str(raised.value), raised.value.position) == (
        "criteria are longer than 500 characters",
        501,
    )


def test_ordering_names_a_field_with_an_optional_minus():
    assert ordering_parse("-change_percent") == ("change_percent", True)
    assert ordering_parse("Volume") == ("volume", False)
    with pytest.raises(CriteriaError) as raised:
        ordering_parse("-price")
    assert str(raised.value) == "unknown field 'price' at 2"


# -- properties --------------------------------------------------------------------------

PRICE_POOL = [None, "0", "9.90", "10.00", "10.50", "10.60", "11"]
AMOUNT_POOL = ["0", "100", "1050.00", "2500.5"]
LITERAL_POOL = ["0", "-1", "-0.5", "0.5", "0.50", "5", "6", "-5", "10", "10.5", "10.60"]

prices = st.sampled_from(PRICE_POOL).map(lambda v: None if v is None else Decimal(v))
amounts = st.sampled_from(AMOUNT_POOL).map(Decimal)
summaries = st.builds(
    SecuritySummary,
    last=prices,
    open=prices,
    high=prices,
    low=prices,
    previous_close=prices,
    best_bid=prices,
    best_ask=prices,
    volume=amounts,
    value_traded=amounts,
    trades=st.integers(0, 3),
)
literals = st.one_of(
    st.sampled_from(LITERAL_POOL).map(Decimal),
    st.decimals(min_value=-2000, max_value=2000, places=3),
)
OPS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def reference_value(given: SecuritySummary, field: str) -> Decimal | None:
    """The field read straight off the summary (the test's own definition)."""
    if field == "spread":
        if given.best_bid is None or given.best_ask is None:
            return None
        return given.best_ask - given.best_bid
    if field == "trades":
        return Decimal(given.trades)
    return getattr(given, field)


@dataclass(frozen=True)
class Expr:
    """Criteria text with the truth it must have, computed without the parser."""

    text: str
    holds: Callable[[SecuritySummary], bool]
    depth: int
    is_atom: bool


def _operand(draw: st.DrawFn, *, must_be_field: bool):
    if must_be_field or draw(st.booleans()):
        field = draw(st.sampled_from(FIELDS))
        text = field.upper() if draw(st.booleans()) else field
        return text, lambda s: reference_value(s, field)
    value = draw(literals)
    return format(value, "f"), lambda s: value


@st.composite
def comparisons(draw: st.DrawFn) -> Expr:
    left_is_field = draw(st.booleans())
    left_text, left = _operand(draw, must_be_field=left_is_field)
    right_text, right = _operand(draw, must_be_field=not left_is_field)
    op = draw(st.sampled_from(list(OPS)))
    space = draw(st.sampled_from(["", " "]))

    def holds(s: SecuritySummary) -> bool:
        a, b = left(s), right(s)
        return a is not None and b is not None and OPS[op](a, b)

    return Expr(f"{left_text}{space}{op}{space}{right_text}", holds, 0, True)


def atom(expr: Expr) -> Expr:
    if expr.is_atom:
        return expr
    return Expr(f"({expr.text})", expr.holds, expr.depth + 1, True)


def negation(expr: Expr) -> Expr:
    inner = atom(expr)
    return Expr(
        f"not {inner.text}", lambda s: not inner.holds(s), inner.depth + 1, True
    )


@st.composite
def chains(draw: st.DrawFn, children: st.SearchStrategy[Expr]) -> Expr:
    """``a and b or c ...`` without parentheses: the reference applies the
    precedence itself (``or`` of ``and`` groups)."""
    items = [atom(item) for item in draw(st.lists(children, min_size=2, max_size=4))]
    words = draw(
        st.lists(
            st.sampled_from(["and", "AND", "or", "Or"]),
            min_size=len(items) - 1,
            max_size=len(items) - 1,
        )
    )
    groups: list[list[Expr]] = [[items[0]]]
    for word, item in zip(words, items[1:], strict=True):
        if word.lower() == "or":
            groups.append([item])
        else:
            groups[-1].append(item)
    text = items[0].text + "".join(
        f" {word} {item.text}" for word, item in zip(words, items[1:], strict=True)
    )

    def holds(s: SecuritySummary) -> bool:
        return any(all(item.holds(s) for item in group) for group in groups)

    return Expr(text, holds, max(item.depth for item in items), False)


expressions = st.recursive(
    comparisons(),
    lambda children: st.one_of(children.map(negation), chains(children)),
    max_leaves=10,
)


@given(expr=expressions, given_summary=summaries)
def test_random_criteria_evaluate_like_a_direct_reference(expr, given_summary):
    assume(expr.depth <= MAX_DEPTH and len(expr.text) <= MAX_LENGTH)

    node = criteria_parse(expr.text)

    assert criteria_evaluate(node, summary_values(given_summary)) is expr.holds(
        given_summary
    )


operands = st.one_of(
    st.sampled_from(FIELDS).map(Field),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4).map(Literal),
)
trees = st.recursive(
    st.tuples(
        st.sampled_from(FIELDS).map(Field), st.sampled_from(list(OPS)), operands
    ).flatmap(
        lambda t: st.sampled_from(
            [Compare(t[1], t[0], t[2]), Compare(t[1], t[2], t[0])]
        )
    ),
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(tuple).map(And),
        st.lists(children, min_size=2, max_size=3).map(tuple).map(Or),
    ),
    max_leaves=8,
)


@given(tree=trees)
def test_formatted_trees_parse_back_to_themselves(tree):
    text = criteria_format(tree)
    assume(len(text) <= MAX_LENGTH)
    try:
        parsed = criteria_parse(text)
    except CriteriaError as error:
        assume("nest deeper" not in error.message)
        raise

    assert parsed == tree


GARBAGE_TOKENS = [
    "last",
    "volume",
    "Change_Percent",
    "spread",
    "foo",
    "and",
    "OR",
    "not",
    "(",
    ")",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "!=",
    "==",
    "-",
    "+",
    "10",
    "10.50",
    ".5",
    "1.",
    "1e3",
    "$",
    "\t",
    "\u00a0",
    "é",
    "\u0661",  # an Arabic-Indic one
    "\x00",
]


@given(
    text=st.one_of(
        st.text(max_size=600),
        st.lists(st.sampled_from(GARBAGE_TOKENS), max_size=80).map(" ".join),
        st.lists(st.sampled_from(GARBAGE_TOKENS), max_size=80).map("".join),
    )
)
def test_garbage_raises_nothing_but_criteria_error(text):
    try:
        node = criteria_parse(text)
    except CriteriaError as error:
        assert error.position is not None
        assert 1 <= error.position <= len(text) + 1
    else:
        assert criteria_evaluate(node, summary_values(SecuritySummary())) in (
            True,
            False,
        )
