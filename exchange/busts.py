"""Trade busts and corrections by staff: new ledger entries that undo a trade.

A trade is never edited or deleted, nor are its journal entries. Busting it posts
one new entry (kind ``bust``, reference ``trade:<id>``) that is the exact opposite
of the net effect of every entry referring to the trade (its execution, and any
settlement entries), so both sides get back what the trade moved, fees included,
and the positions' cost bases are restored. A correction busts a trade and books a
replacement trade at a corrected price and/or quantity between the same accounts.

Orders are left as they are: their fills happened, and ``filled_quantity`` keeps
equalling the quantities of their executed (not corrected) trades. The bust is
recorded on the trade (``busted_at``, ``busted_by``, ``bust_reason``) and in the
audit trail of the trade and of both orders, not as order events (an order's state
does not change).
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from django.db import transaction
from django.utils import timezone

from exchange.fees import ACCRUED_UNIT, FeeRates, fill_fee, order_fee_rates
from exchange.matching import trades_topic
from exchange.models import OffGridError, Symbol, Trade
from exchange.streams import (
    Message,
    publish_on_commit,
    stream_advance,
    stream_message,
)
from exchange.wire import trade_to_wire
from oms.models import Order
from oms.publish import private_messages
from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import Account, Asset, Bucket, JournalEntry, Posting
from registry.services import RegistryError, User, audit_record, system_account

BalanceKey = tuple[int, int]
#: ``hook(busted, correction)``, run inside a bust's or correction's transaction
#: after the ledger entries and the tape's messages; returns messages to publish on
#: commit. Market data registers one that recomputes the summary and candles.
BustHook = Callable[[Trade, Trade | None], list[Message]]
_bust_hooks: list[BustHook] = []
#: Room left in ``JournalEntry.reason`` (200) for "Correction of trade <id>: ".
REASON_MAX_LENGTH = 160


@dataclass(frozen=True, slots=True)
class BustResult:
    trade: Trade
    entry: JournalEntry


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    busted: Trade
    bust_entry: JournalEntry
    correction: Trade
    correction_entry: JournalEntry


def trade_bust(*, trade: Trade, acting_user: User, reason: str) -> BustResult:
    """Reverse ``trade`` in the ledger with a new ``bust`` entry; mark it busted.

    The reversal is the opposite of the net of every posting whose entry has the
    reference ``trade:<id>``, per account, asset and bucket, except that what the
    trade took from a ``held`` bucket goes back to ``available`` (the order's hold
    was consumed by the fill; its remaining hold is untouched). Cost-base changes
    are reversed too; a position the bust empties has its cost base cleared, and one
    whose cost base would turn negative (the units were partly sold since) has it
    set to zero.

    Raises ``RegistryError``: ``reason_required`` (400), ``trade_already_busted``
    (409), ``bust_insufficient_balance`` (422: a client no longer has what the bust
    takes back, e.g. the buyer sold the units); nothing is changed then.

    Writes audit records (``trade_bust`` on the trade and both orders) naming
    ``acting_user``. Runs the bust hooks (market data recomputes the symbol's
    summary and candles without the trade). Side effects on commit: publishes the
    busted trade on ``trades.<symbol>`` (``busted: true``), the hooks' messages (the
    new ticker and candles) and both accounts' balances and holdings.
    """
    reason = _reason(reason)
    with transaction.atomic(durable=True):
        trade = _trade_for_update(trade.pk)
        keys, reversal = _reversal(trade)
        batch = LedgerBatch(keys)
        _post_bust(batch, trade, reversal, acting_user, reason)
        (entry,) = batch.flush()
        tape_seq = _tape_seq(trade.symbol)
        _mark_busted(trade, entry, acting_user, reason, tape_seq)
        messages = _tape_messages(trade, tape_seq, None)
        messages += private_messages(
            orders=[], balances=[batch.balances[key] for key in sorted(keys)]
        )
        publish_on_commit(messages)
    return BustResult(trade, entry)


def trade_correct(
    *,
    trade: Trade,
    price: Decimal,
    quantity: Decimal,
    acting_user: User,
    reason: str,
) -> CorrectionResult:
    """Bust ``trade`` and book a replacement at ``price`` x ``quantity``.

    The replacement is a new trade between the same accounts and orders, with the
    same aggressor side, ``corrected_from`` the busted trade, a new ``seq`` on the
    symbol's tape, and fees at the rates and minimum pinned on each order, by the
    cumulative rule of fills (``_correction_fees``). Its entry
    (kind ``trade``, reference ``trade:<new id>``) moves cash and units between the
    ``available`` buckets (there is no hold behind a correction) and sets the cost
    bases like a fill.

    Raises ``RegistryError`` as ``trade_bust`` does, and ``invalid_price``,
    ``price_off_tick``, ``invalid_quantity``, ``quantity_off_lot`` (400),
    ``correction_insufficient_balance`` (422: the buyer cannot pay, or the seller
    cannot deliver, after the bust); nothing is changed then.

    Side effects on commit: publishes the busted trade (``busted: true``) and then
    the new one on ``trades.<symbol>``, the bust hooks' messages (ticker, candles)
    and both accounts' balances and holdings.
    """
    reason = _reason(reason)
    _check_grid(trade.symbol, price, quantity)
    with transaction.atomic(durable=True):
        trade = _trade_for_update(trade.pk)
        _orders_for_update(trade)
        symbol = trade.symbol
        fee_account = symbol.market.fee_account or system_account(Account.Kind.FEES)
        keys, reversal = _reversal(trade)
        keys |= {
            (account_id, asset_id)
            for account_id in (trade.buyer_id, trade.seller_id)
            for asset_id in (symbol.currency_id, symbol.asset_id)
        }
        keys.add((fee_account.pk, symbol.currency_id))
        batch = LedgerBatch(keys)
        _post_bust(batch, trade, reversal, acting_user, reason)
        tape_seq = _tape_seq(symbol)
        correction = _correction_trade(trade, price, quantity)
        _post_correction(batch, correction, fee_account, acting_user, reason)
        bust_entry, correction_entry = batch.flush()
        _mark_busted(trade, bust_entry, acting_user, reason, tape_seq)
        audit_record(
            actor=acting_user,
            action="trade_correct",
            target=correction,
            reason=reason,
            changes={
                "corrected_from": trade.pk,
                "price": str(correction.price),
                "quantity": str(correction.quantity),
                "entry": correction_entry.pk,
            },
        )
        messages = _tape_messages(trade, tape_seq, correction)
        messages += private_messages(
            orders=[], balances=[batch.balances[key] for key in sorted(keys)]
        )
        publish_on_commit(messages)
    return CorrectionResult(trade, bust_entry, correction, correction_entry)


def bust_hook_register(hook: BustHook) -> None:
    """Run ``hook`` in every bust and correction transaction (after the balance and
    the trades stream locks; it may lock the symbol's market-data rows). Registered
    at start-up (``AppConfig.ready``) by apps above ``exchange``."""
    if hook not in _bust_hooks:
        _bust_hooks.append(hook)


def _tape_messages(
    busted: Trade, tape_seq: int, correction: Trade | None
) -> list[Message]:
    """The tape's messages: the busted trade again (``busted: true``) with the next
    ``trades`` sequence, then the correction if any, then the hooks' messages.

    Precondition: the balance locks are held (stream sequences come after them).
    The busted trade's notice takes a sequence number of its own, so the trades
    stream stays gapless while trade ``seq`` values skip it; the audit record of the
    bust names it (``tape_seq``).
    """
    topic = trades_topic(busted.symbol)
    messages = [stream_message(topic, tape_seq, trade_to_wire(busted))]
    if correction is not None:
        messages.append(
            stream_message(topic, correction.seq, trade_to_wire(correction))
        )
    for hook in _bust_hooks:
        messages += hook(busted, correction)
    return messages


# -- the bust ----------------------------------------------------------------------


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RegistryError(
            "Give the reason for the bust.", code="reason_required", field="reason"
        )
    if len(reason) > REASON_MAX_LENGTH:
        raise RegistryError(
            f"The reason is longer than {REASON_MAX_LENGTH} characters.",
            code="reason_too_long",
            field="reason",
        )
    return reason


def _trade_for_update(trade_id: int) -> Trade:
    """The trade, locked (before any balance: trade rows come first in the lock
    order), with its symbol loaded; refuses one already busted."""
    trade = (
        Trade.objects.select_for_update(of=("self",))
        .select_related(
            "symbol__market", "symbol__asset", "symbol__currency", "buyer", "seller"
        )
        .get(pk=trade_id)
    )
    if trade.busted_at is not None:
        raise RegistryError(
            f"Trade {trade.pk} was already busted at {trade.busted_at:%Y-%m-%d %H:%M:%S}.",
            code="trade_already_busted",
            status=409,
        )
    return trade


def _orders_for_update(trade: Trade) -> None:
    """Lock the trade's two orders (after the trade row, before any balance: the
    matching worker locks orders before balances too), so that no fill of theirs
    commits while a correction reads their trades."""
    list(
        Order.objects.select_for_update(of=("self",))
        .filter(pk__in=(trade.buy_order_id, trade.sell_order_id))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _reversal(trade: Trade) -> tuple[set[BalanceKey], list[Line]]:
    """The balance keys and lines that undo every entry referring to ``trade``.

    Nets the amounts per (account, asset, bucket) and the cost changes per
    (account, asset) over all postings with reference ``trade:<id>``, whichever
    entries and buckets made them, and returns their opposites (held -> available).
    """
    amounts: defaultdict[tuple[int, int, str], Decimal] = defaultdict(Decimal)
    costs: defaultdict[BalanceKey, Decimal] = defaultdict(Decimal)
    rows = Posting.objects.filter(entry__reference=f"trade:{trade.pk}").values_list(
        "account_id", "asset_id", "bucket", "amount", "cost_delta"
    )
    for account_id, asset_id, bucket, amount, cost_delta in rows:
        target = Bucket.AVAILABLE if bucket == Bucket.HELD else bucket
        amounts[(account_id, asset_id, target)] -= amount
        costs[(account_id, asset_id)] -= cost_delta
    lines = []
    for (account_id, asset_id, bucket), amount in sorted(amounts.items()):
        if amount:
            # The cost change rides on the first line of its position.
            cost = costs.pop((account_id, asset_id), Decimal(0))
            lines.append(Line(account_id, asset_id, bucket, amount, cost))
    lines += [
        Line(account_id, asset_id, Bucket.AVAILABLE, Decimal(0), cost)
        for (account_id, asset_id), cost in sorted(costs.items())
        if cost
    ]
    keys = {(line.account_id, line.asset_id) for line in lines}
    return keys, lines


def _post_bust(
    batch: LedgerBatch,
    trade: Trade,
    reversal: list[Line],
    acting_user: User,
    reason: str,
) -> None:
    """Post the reversal, with each cost change bounded so that a position the bust
    empties, or whose cost would turn negative, ends with a cost base of zero."""
    quantity_change: defaultdict[BalanceKey, Decimal] = defaultdict(Decimal)
    for line in reversal:
        quantity_change[(line.account_id, line.asset_id)] += line.amount
    lines = []
    for line in reversal:
        if line.cost_delta:
            position = batch.balance(line.account_id, line.asset_id)
            key = (line.account_id, line.asset_id)
            new_cost = position.cost + line.cost_delta
            if new_cost < 0 or position.total + quantity_change[key] == 0:
                line = Line(*key, line.bucket, line.amount, -position.cost)
        lines.append(line)
    try:
        batch.post(
            kind=JournalEntry.Kind.BUST,
            lines=lines,
            reference=f"trade:{trade.pk}",
            reason=reason,
            acting_user_id=_user_id(acting_user),
        )
    except InsufficientBalanceError as error:
        raise RegistryError(
            _shortfall_text(f"Cannot bust trade {trade.pk}", error),
            code="bust_insufficient_balance",
            status=422,
        ) from error


def _tape_seq(symbol: Symbol) -> int:
    """The next ``trades`` stream sequence, for a bust's notice on the tape."""
    topic = trades_topic(symbol)
    return stream_advance({topic: 1})[topic]


def _mark_busted(
    trade: Trade, entry: JournalEntry, acting_user: User, reason: str, tape_seq: int
) -> None:
    """Record the bust on the trade and in the audit trail (with ``tape_seq``, the
    sequence of its notice on the trades stream)."""
    trade.busted_at = timezone.now()
    trade.busted_by_id = _user_id(acting_user)
    trade.bust_reason = reason
    trade.save(update_fields=["busted_at", "busted_by", "bust_reason"])
    changes = {"trade": trade.pk, "entry": entry.pk, "tape_seq": tape_seq}
    audit_record(
        actor=acting_user,
        action="trade_bust",
        target=trade,
        reason=reason,
        changes=changes,
    )
    for order_id in sorted({trade.buy_order_id, trade.sell_order_id}):
        # An unsaved instance is enough to name the order in the audit trail.
        audit_record(
            actor=acting_user,
            action="trade_bust",
            target=Order(pk=order_id),
            reason=reason,
            changes=changes,
        )


def _shortfall_text(prefix: str, error: InsufficientBalanceError) -> str:
    account_id, asset_id = error.key
    number = Account.objects.filter(pk=account_id).values_list("number", flat=True)
    code = Asset.objects.filter(pk=asset_id).values_list("code", flat=True)
    return (
        f"{prefix}: account {number.first()} would be short of "
        f"{error.shortfall.normalize():f} {code.first()} ({error.bucket})."
    )


def _user_id(user: User) -> int | None:
    return user.pk if user is not None and user.is_authenticated else None


# -- the correction ----------------------------------------------------------------


def _check_grid(symbol: Symbol, price: Decimal, quantity: Decimal) -> None:
    if price <= 0:
        raise RegistryError(
            "The price must be positive.", code="invalid_price", field="price"
        )
    if quantity <= 0:
        raise RegistryError(
            "The quantity must be positive.", code="invalid_quantity", field="quantity"
        )
    try:
        symbol.to_ticks(price)
    except OffGridError as error:
        raise RegistryError(
            f"{price} is not a multiple of the tick size {symbol.price_unit}.",
            code="price_off_tick",
            field="price",
        ) from error
    try:
        symbol.to_lots(quantity)
    except OffGridError as error:
        raise RegistryError(
            f"{quantity} is not a multiple of the lot size "
            f"{symbol.asset.quantize(symbol.lot_size)}.",
            code="quantity_off_lot",
            field="quantity",
        ) from error


def _correction_trade(trade: Trade, price: Decimal, quantity: Decimal) -> Trade:
    """Create the replacement trade with the next ``seq`` of the symbol's tape.

    Precondition: the balance locks are held (stream sequences come after them)."""
    symbol = trade.symbol
    market = symbol.market
    currency = symbol.currency
    value = currency.quantize(price * quantity)
    buyer_fee, seller_fee = _correction_fees(trade, value)
    topic = trades_topic(symbol)
    now = timezone.now()
    return Trade.objects.create(
        symbol=symbol,
        seq=stream_advance({topic: 1})[topic],
        price=symbol.format_price(price),
        quantity=symbol.asset.quantize(quantity),
        value=value,
        buyer_fee=buyer_fee,
        seller_fee=seller_fee,
        aggressor_side=trade.aggressor_side,
        buy_order_id=trade.buy_order_id,
        sell_order_id=trade.sell_order_id,
        buyer_id=trade.buyer_id,
        seller_id=trade.seller_id,
        executed_at=now,
        corrected_from=trade,
        # A correction books straight into the available buckets: settled at once.
        settlement_date=now.astimezone(market.tzinfo).date(),
        settled_at=now,
    )


def _correction_fees(trade: Trade, value: Decimal) -> tuple[Decimal, Decimal]:
    """The buyer's and the seller's fee of the correction of ``trade`` at
    ``value``: each order's pinned rates and minimum (``order_fee_rates``), by the
    cumulative rule of fills, as if the correction were the order's fill in place
    of the busted trade - the order's cumulative fee over its standing trades and
    the correction, minus what those other trades charged it (a seller's capped at
    the correction's proceeds). The side that was the aggressor pays its taker
    rate, the other its maker rate.

    Precondition: both orders are locked (``_orders_for_update``), so no fill of
    theirs commits meanwhile."""
    fees = []
    for order_id, side in (
        (trade.buy_order_id, Trade.Side.BUY),
        (trade.sell_order_id, Trade.Side.SELL),
    ):
        order = Order.objects.get(pk=order_id)
        rates = order_fee_rates(order)
        accrued, charged = _standing_fees(order, side, rates, corrected=trade)
        fee, _ = fill_fee(
            rates=rates,
            is_taker=trade.aggressor_side == side,
            value=value,
            accrued=accrued,
            charged=charged,
            currency=trade.symbol.currency,
            proceeds_cap=value if side == Trade.Side.SELL else None,
        )
        fees.append(fee)
    return fees[0], fees[1]


def _standing_fees(
    order: Order, side: str, rates: FeeRates, *, corrected: Trade
) -> tuple[Decimal, Decimal]:
    """What ``order`` has accrued and been charged over its trades that stand
    (not busted; corrections included), leaving out ``corrected``."""
    is_buy = side == Trade.Side.BUY
    trades = (
        Trade.objects.filter(
            **{"buy_order_id" if is_buy else "sell_order_id": order.pk}
        )
        .filter(busted_at__isnull=True)
        .exclude(pk=corrected.pk)
        .order_by("symbol_id", "seq")
    )
    accrued = charged = Decimal(0)
    for other in trades:
        rate = rates.rate(is_taker=other.aggressor_side == side)
        accrued = (accrued + rate * other.value).quantize(
            ACCRUED_UNIT, rounding=ROUND_FLOOR
        )
        charged += other.buyer_fee if is_buy else other.seller_fee
    return accrued, charged


def _post_correction(
    batch: LedgerBatch,
    trade: Trade,
    fee_account: Account,
    acting_user: User,
    reason: str,
) -> None:
    """Post the replacement like a fill, from and to the ``available`` buckets."""
    symbol = trade.symbol
    currency_id, asset_id = symbol.currency_id, symbol.asset_id
    value, buyer_fee, seller_fee = trade.value, trade.buyer_fee, trade.seller_fee
    seller_position = batch.balance(trade.seller_id, asset_id)
    cost_out = Decimal(0)
    if seller_position.total:
        cost_out = symbol.currency.quantize(
            seller_position.cost * trade.quantity / seller_position.total
        )
    try:
        batch.post(
            kind=JournalEntry.Kind.TRADE,
            lines=[
                Line(
                    trade.buyer_id, currency_id, Bucket.AVAILABLE, -(value + buyer_fee)
                ),
                Line(
                    trade.seller_id, currency_id, Bucket.AVAILABLE, value - seller_fee
                ),
                Line(
                    fee_account.pk,
                    currency_id,
                    Bucket.AVAILABLE,
                    buyer_fee + seller_fee,
                ),
                Line(
                    trade.seller_id,
                    asset_id,
                    Bucket.AVAILABLE,
                    -trade.quantity,
                    -cost_out,
                ),
                Line(
                    trade.buyer_id,
                    asset_id,
                    Bucket.AVAILABLE,
                    trade.quantity,
                    value + buyer_fee,
                ),
            ],
            reference=f"trade:{trade.pk}",
            reason=f"Correction of trade {trade.corrected_from_id}: {reason}"[:200],
            acting_user_id=_user_id(acting_user),
        )
    except InsufficientBalanceError as error:
        raise RegistryError(
            _shortfall_text(
                f"Cannot book the correction of trade {trade.corrected_from_id}", error
            ),
            code="correction_insufficient_balance",
            status=422,
        ) from error
