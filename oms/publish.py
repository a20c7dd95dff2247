"""Private stream messages (orders, balances, holdings) for the accounts changed."""

from collections import Counter, defaultdict
from collections.abc import Iterable

from exchange.streams import Message, stream_advance, stream_message
from oms.models import Order
from oms.wire import order_to_wire
from registry.models import Asset, Balance
from registry.wire import balance_to_wire, holding_to_wire


def orders_topic(account_id: int) -> str:
    return f"orders.acct.{account_id}"


def balances_topic(account_id: int) -> str:
    return f"balances.acct.{account_id}"


def holdings_topic(account_id: int) -> str:
    return f"holdings.acct.{account_id}"


def private_messages(
    *, orders: Iterable[Order], balances: Iterable[Balance]
) -> list[Message]:
    """Advance the private topics' sequences and build their messages.

    Precondition: inside the transaction making the changes, after the balance locks.
    Orders need their symbol (market, asset, currency) loaded; balances their asset.
    """
    orders = list(orders)
    client_balances = [b for b in balances if not b.allow_negative]
    topics_of: dict[int, str] = {}
    counts: Counter[str] = Counter()
    for order in orders:
        counts[orders_topic(order.account_id)] += 1
    for balance in client_balances:
        is_security = balance.asset.kind == Asset.Kind.SECURITY
        topic = (holdings_topic if is_security else balances_topic)(balance.account_id)
        topics_of[id(balance)] = topic
        counts[topic] += 1
    first = stream_advance(counts)
    next_seq: defaultdict[str, int] = defaultdict(int, first)
    messages: list[Message] = []
    for order in orders:
        topic = orders_topic(order.account_id)
        messages.append(
            stream_message(
                topic, next_seq[topic], order_to_wire(order), account=order.account_id
            )
        )
        next_seq[topic] += 1
    for balance in client_balances:
        topic = topics_of[id(balance)]
        if balance.asset.kind == Asset.Kind.SECURITY:
            data = holding_to_wire(balance)
        else:
            data = balance_to_wire(balance)
        messages.append(
            stream_message(topic, next_seq[topic], data, account=balance.account_id)
        )
        next_seq[topic] += 1
    return messages
