"""The stream topics a WebSocket client may subscribe to, one handler per kind.

A client topic is ``<kind>`` or ``<kind>.<argument>`` (``book.XSX:XS01``,
``orders``). Its handler says which upstream topics (channel-layer groups with their
own gapless sequence) feed it, and reads the snapshot. Handlers run in a database
thread; they raise :class:`StreamError` for a topic that does not exist or that the
user may not see. New kinds register with :func:`register`; private per-account
kinds subclass :class:`AccountTopic`.
"""

from dataclasses import dataclass
from typing import Any, Protocol

from exchange.models import Market, Symbol
from exchange.selectors import (
    book_snapshot,
    market_snapshot,
    snapshot_transaction,
    symbol_find,
    trades_snapshot,
)
from exchange.streams import stream_current
from oms.models import OPEN_STATUSES, Order
from oms.publish import balances_topic, holdings_topic, orders_topic
from oms.wire import order_to_wire
from registry.models import AccountAccess, Asset, Balance
from registry.wire import balance_to_wire, holding_to_wire


class StreamError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Snapshot:
    """``seq`` for a single-upstream topic, ``seqs`` (by account) for private ones."""

    data: Any
    seq: int | None = None
    seqs: dict[str, int] | None = None


class TopicHandler(Protocol):
    def upstreams(self, user: Any, argument: str) -> list[str]: ...

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot: ...


TOPICS: dict[str, TopicHandler] = {}


def register(kind: str, handler: TopicHandler) -> None:
    TOPICS[kind] = handler


def unknown(topic: str) -> StreamError:
    return StreamError("unknown_topic", f"There is no topic {topic!r}.")


def symbol_or_error(kind: str, identifier: str) -> Symbol:
    symbol = symbol_find(identifier)
    if symbol is None:
        raise unknown(f"{kind}.{identifier}")
    return symbol


def signed_in(user: Any, topic: str) -> None:
    if user is None or not user.is_authenticated:
        raise StreamError("unauthorized", f"Sign in to subscribe to {topic}.")


def account_ids_of(user: Any) -> list[int]:
    return list(
        AccountAccess.objects.filter(user_id=user.pk)
        .order_by("account_id")
        .values_list("account_id", flat=True)
    )


class BookTopic:
    def upstreams(self, user: Any, argument: str) -> list[str]:
        symbol = symbol_or_error("book", argument)
        return [f"book.{symbol.identifier}"]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = book_snapshot(symbol_or_error("book", argument))
        return Snapshot(seq=data.pop("seq"), data=data)


class TradesTopic:
    def upstreams(self, user: Any, argument: str) -> list[str]:
        symbol = symbol_or_error("trades", argument)
        return [f"trades.{symbol.identifier}"]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = trades_snapshot(symbol_or_error("trades", argument))
        return Snapshot(seq=data.pop("seq"), data=data)


class MarketTopic:
    def _market(self, code: str) -> Market:
        market = Market.objects.select_related("currency").filter(code=code).first()
        if market is None:
            raise unknown(f"market.{code}")
        return market

    def upstreams(self, user: Any, argument: str) -> list[str]:
        return [f"market.{self._market(argument).code}"]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = market_snapshot(self._market(argument))
        return Snapshot(seq=data.pop("seq"), data=data)


class AccountTopic:
    """A private topic over every account the user can see: one upstream
    ``<kind>.acct.<account id>`` per account, so its sequences run per account and
    the snapshot carries ``seqs`` keyed by account id. Subclasses set ``kind`` and
    give :meth:`topic_of` and :meth:`data` (read inside the snapshot transaction)."""

    kind: str

    def topic_of(self, account_id: int) -> str:
        return f"{self.kind}.acct.{account_id}"

    def data(self, account_ids: list[int]) -> Any:
        raise NotImplementedError

    def upstreams(self, user: Any, argument: str) -> list[str]:
        if argument:
            raise unknown(f"{self.kind}.{argument}")
        signed_in(user, self.kind)
        return [self.topic_of(account_id) for account_id in account_ids_of(user)]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        account_ids = [account_of(upstream) for upstream in upstreams]
        with snapshot_transaction():
            current = stream_current(upstreams)
            seqs = {str(account_of(u)): seq for u, seq in current.items()}
            return Snapshot(seqs=seqs, data=self.data(account_ids))


def account_of(upstream: str) -> int:
    """The account id of a private upstream topic (``orders.acct.7`` -> 7)."""
    return int(upstream.rsplit(".", 1)[1])


class PrivateTopic(AccountTopic):
    """``orders``, ``balances`` or ``holdings`` of every account the user can see."""

    _topics = {
        "orders": orders_topic,
        "balances": balances_topic,
        "holdings": holdings_topic,
    }

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def topic_of(self, account_id: int) -> str:
        return self._topics[self.kind](account_id)

    def data(self, account_ids: list[int]) -> list[dict[str, Any]]:
        if self.kind == "orders":
            orders = (
                Order.objects.filter(
                    account_id__in=account_ids, status__in=OPEN_STATUSES
                )
                .select_related("symbol__market", "symbol__asset", "symbol__currency")
                .order_by("id")
            )
            return [order_to_wire(order) for order in orders]
        is_holdings = self.kind == "holdings"
        balances = (
            Balance.objects.filter(
                account_id__in=account_ids,
                asset__kind=Asset.Kind.SECURITY if is_holdings else Asset.Kind.CURRENCY,
            )
            .select_related("asset")
            .order_by("account_id", "asset__code")
        )
        wire = holding_to_wire if is_holdings else balance_to_wire
        return [{"account": b.account_id, **wire(b)} for b in balances]


register("book", BookTopic())
register("trades", TradesTopic())
register("market", MarketTopic())
for _kind in ("orders", "balances", "holdings"):
    register(_kind, PrivateTopic(_kind))
