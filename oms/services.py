"""Order entry: authorise, validate, vet, reserve and store, in one transaction.

Every door (REST, WebSocket, the web app) calls these services. An order is
acknowledged only after the transaction that stores it, its first event, its
reservation and its matching request has committed.
"""

import dataclasses
import uuid
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from exchange.fees import FeeRates
from exchange.models import Market, Symbol, TradingState
from exchange.streams import publish_on_commit
from exchange.wakeup import market_notify
from oms.errors import MAX_ORDER_VALUE, OrderError, User
from oms.models import (
    OPEN_STATUSES,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from oms.publish import private_messages
from oms.reservations import (
    buy_reservation,
    hold_lines,
    hold_post,
    oco_leg_hold,
    order_buy_reservation,
    order_reservation,
    shortfall_error,
    trailing_stop_initial,
)
from oms.retry import retry_on_conflict
from oms.specs import AmendSpec, OrderSpec, PlaceResult, default_time_in_force
from oms.validation import (
    account_for_trading,
    amend_validate,
    market_check_trading,
    order_vet,
    symbol_resolve,
    trading_user_id,
)
from registry.ledger import InsufficientBalanceError, LedgerBatch
from registry.models import (
    Account,
    Asset,
    JournalEntry,
)
from registry.services import audit_record

__all__ = [
    "MAX_ORDER_VALUE",
    "AmendSpec",
    "OrderError",
    "OrderSpec",
    "PlaceResult",
    "User",
    "account_for_trading",
    "buy_reservation",
    "day_order_expiry",
    "default_time_in_force",
    "market_check_trading",
    "order_amend",
    "order_buy_reservation",
    "order_cancel",
    "order_cancel_all",
    "order_cancel_queue",
    "order_place",
    "order_reservation",
    "order_vet",
    "orders_expire_at_close",
    "orders_expire_day",
    "orders_expire_due",
    "symbol_resolve",
    "trailing_stop_initial",
]


def day_order_expiry(market: Market, now: datetime) -> datetime:
    """When a DAY order placed at ``now`` expires at the latest: the end of the
    market's local trading date (the session close expires it earlier)."""
    local = now.astimezone(market.tzinfo)
    midnight = datetime.combine(
        local.date() + timedelta(days=1), time(0), tzinfo=market.tzinfo
    )
    return midnight


def order_place(*, user: User, spec: OrderSpec) -> PlaceResult:
    """Place an order. Returns the stored order (``created=False`` for a resubmission
    of the same ``client_order_id`` and body). Raises ``OrderError``; on error
    nothing is stored and nothing is held. A lock conflict or a lost database
    session is retried (``oms.retry``) under the same ``client_order_id`` (one is
    made up here if the client gave none), so a retry after a commit whose answer
    was lost returns that order instead of placing it twice.

    Side effects on commit: wakes the market's matching worker and publishes the
    order on the account's ``orders`` stream.
    """
    if spec.client_order_id:
        return _order_place(user=user, spec=spec, look_up=True)
    spec = dataclasses.replace(spec, client_order_id=uuid.uuid4().hex)
    # A made-up id cannot have been used before: the unique constraint catches
    # the retry of a placement that did commit.
    return _order_place(user=user, spec=spec, look_up=False)


@retry_on_conflict
def _order_place(*, user: User, spec: OrderSpec, look_up: bool) -> PlaceResult:
    account = account_for_trading(user=user, account_id=spec.account_id)
    if look_up:
        existing = _existing(account, spec)
        if existing is not None:
            return existing
    symbol = symbol_resolve(spec.symbol)
    price = order_vet(spec, symbol)
    held_asset, held_amount, rates = order_reservation(
        account=account, symbol=symbol, spec=spec, price=price
    )
    client_order_id = spec.client_order_id
    try:
        with transaction.atomic(durable=True):
            order = _store(
                user,
                account,
                symbol,
                spec,
                price,
                held_asset,
                held_amount,
                client_order_id,
                rates,
            )
    except IntegrityError:
        # A concurrent request with the same client_order_id won the race.
        existing = _existing(account, spec)
        if existing is None:
            raise
        return existing
    return PlaceResult(order=order, created=True)


def _existing(account: Account, spec: OrderSpec) -> PlaceResult | None:
    """The order already placed under ``spec.client_order_id``, if any. Raises
    ``OrderError`` ``duplicate_client_order_id`` (409) if it was placed with a
    different request (compared by fingerprint, whatever amends and fills did to
    the order since)."""
    order = (
        Order.objects.select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        )
        .filter(account=account, client_order_id=spec.client_order_id)
        .first()
    )
    if order is None:
        return None
    if order.request_fingerprint:
        same = order.request_fingerprint == spec.fingerprint()
    else:
        same = spec.same_as(order)
    if not same:
        raise OrderError(
            "duplicate_client_order_id",
            f"client_order_id {spec.client_order_id!r} was used for a different order.",
            field="client_order_id",
            status=409,
        )
    return PlaceResult(order=order, created=False)


def _oco_partner(account: Account, symbol: Symbol, order_id: int) -> Order:
    """Lock and return the open order an OCO order pairs with."""
    partner = (
        Order.objects.select_for_update(of=("self",))
        .filter(pk=order_id, account=account, symbol=symbol)
        .first()
    )
    if partner is None or partner.status not in OPEN_STATUSES:
        raise OrderError(
            "invalid_oco",
            "oco_with must be an open order of the same account and symbol.",
            field="oco_with",
            status=422,
        )
    if partner.oco_with_id is not None:
        raise OrderError(
            "invalid_oco",
            f"Order {partner.pk} is already in an OCO pair.",
            field="oco_with",
            status=422,
        )
    return partner


def _store(
    user: User,
    account: Account,
    symbol: Symbol,
    spec: OrderSpec,
    price: Decimal,
    held_asset: Asset,
    held_amount: Decimal,
    client_order_id: str,
    rates: FeeRates,
) -> Order:
    """Store the order, its hold, first event and place request (inside the
    caller's transaction). Locks: an OCO leg's partner order first, then the
    balance (docs/architecture.md, "Lock order"). A leg on the same side as its
    partner holds only what it needs beyond the partner's hold
    (``oco_leg_hold``). Raises ``OrderError`` (``invalid_oco``, shortfall)."""
    market = symbol.market
    partner = _oco_partner(account, symbol, spec.oco_with) if spec.oco_with else None
    expire_at = spec.expire_at
    if spec.time_in_force == Order.TimeInForce.DAY:
        expire_at = day_order_expiry(market, timezone.now())
    if partner is not None:
        held_amount = oco_leg_hold(partner, held_asset, held_amount)
    batch = LedgerBatch([(account.pk, held_asset.pk)])
    lines, held_unsettled = hold_lines(
        account, batch.balance(account.pk, held_asset.pk), spec.side, held_amount
    )
    order = Order.objects.create(
        account=account,
        symbol=symbol,
        market=market,
        side=spec.side,
        type=spec.type,
        time_in_force=spec.time_in_force,
        price=price,
        quantity=spec.quantity,
        stop_price=spec.stop_price,
        trigger=spec.trigger,
        trail_amount=spec.trail_amount,
        trail_bps=spec.trail_bps,
        display_quantity=spec.display_quantity,
        post_only=spec.post_only,
        min_quantity=spec.min_quantity,
        self_trade_prevention=spec.self_trade_prevention
        or market.self_trade_prevention,
        oco_with=partner,
        expire_at=expire_at,
        status=OrderStatus.PENDING,
        client_order_id=client_order_id,
        request_fingerprint=spec.fingerprint(),
        held_asset=held_asset,
        held_amount=held_amount,
        held_unsettled=held_unsettled,
        placed_by_id=user.pk,
        **rates.as_order_fields(),
    )
    if partner is not None:
        partner.oco_with = order
        partner.save(update_fields=["oco_with", "updated_at"])
    try:
        if held_amount:
            batch.post(
                kind=JournalEntry.Kind.HOLD,
                lines=lines,
                reference=f"order:{order.pk}",
                acting_user_id=user.pk,
            )
    except InsufficientBalanceError as error:
        raise shortfall_error(held_asset, held_amount, error) from error
    batch.flush()
    publish_on_commit(
        private_messages(orders=[order], balances=batch.balances.values())
    )
    OrderEvent.objects.create(
        order=order,
        from_status=OrderStatus.NEW,
        to_status=OrderStatus.PENDING,
        acting_user_id=user.pk,
    )
    OrderRequest.objects.create(
        market=market,
        order=order,
        kind=OrderRequest.Kind.PLACE,
        requested_by_id=user.pk,
    )
    market_notify(market.code)
    return order


def order_cancel(*, user: User, order_id: int) -> Order:
    """Ask the matching worker to cancel an open order.

    The cancel is queued behind earlier requests for the market and carried out in
    arrival order; the order stays open until then. Raises ``OrderError``:
    ``not_authenticated`` (401), ``order_not_found`` (404), ``account_forbidden``
    (403) or ``order_not_open`` (409); a repeated cancel of an order already being
    cancelled is accepted.
    """
    order = (
        Order.objects.select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        )
        .filter(pk=order_id, account__access__user_id=trading_user_id(user))
        .first()
    )
    if order is None:
        raise OrderError(
            "order_not_found", f"There is no order {order_id}.", status=404
        )
    account_for_trading(user=user, account_id=order.account_id)
    market_check_trading(order.symbol.market, order.symbol, "cancel")
    return order_cancel_queue(order_id=order.pk, acting_user=user)


@retry_on_conflict
def order_cancel_queue(
    *, order_id: int, acting_user: User, audit_reason: str = ""
) -> Order:
    """Queue a cancel request for an open order (no access check: callers do it).

    Locks no order row (lock order, docs/architecture.md): the matching batch
    decides what a cancel of an order that ended meanwhile means. Idempotent: a
    cancel or expiry already waiting is not queued again (a partial unique index
    on the inbox). With ``audit_reason`` an audit record names ``acting_user``
    (staff acting on a client's order). Raises ``OrderError`` ``order_not_open``
    (409), ``busy`` (503). On commit wakes the matcher.
    """
    with transaction.atomic(durable=True):
        order = Order.objects.select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        ).get(pk=order_id)
        if order.status not in OPEN_STATUSES:
            raise OrderError(
                "order_not_open", f"Order {order.pk} is {order.status}.", status=409
            )
        if _queue([order], OrderRequest.Kind.CANCEL, acting_user) and audit_reason:
            audit_record(
                actor=acting_user,
                action="order_cancel",
                target=order,
                reason=audit_reason,
            )
    return order


def _order_for_trading(user: User, order_id: int, *, lock: bool = False) -> Order:
    """The order, if ``user`` may trade its account; raises ``OrderError``."""
    orders = Order.objects.select_related(
        "symbol__market", "symbol__asset", "symbol__currency"
    )
    if lock:
        orders = orders.select_for_update(of=("self",), no_key=True)
    order = orders.filter(
        pk=order_id, account__access__user_id=trading_user_id(user)
    ).first()
    if order is None:
        raise OrderError(
            "order_not_found", f"There is no order {order_id}.", status=404
        )
    account_for_trading(user=user, account_id=order.account_id)
    return order


def _amend_names_price(order: Order, amend: AmendSpec, price: Decimal) -> bool:
    """Does the amend request carry a price for the worker? A new one, or the
    stored one named again while an earlier amend waits (the worker applies that
    one first, and it may move the price)."""
    if price != order.price:
        return True
    return (
        amend.price is not None
        and OrderRequest.objects.filter(
            order=order, kind=OrderRequest.Kind.AMEND, processed_at__isnull=True
        ).exists()
    )


@retry_on_conflict
def order_amend(*, user: User, order_id: int, amend: AmendSpec) -> Order:
    """Ask the matching worker to amend an open order.

    Quantity down keeps the order's time priority; a price change or a quantity up
    loses it (the worker re-enters the order). A buy whose new price or quantity
    needs more cash holds the difference now (``insufficient_funds`` if short); a
    sell holds more of the security; what the amended order no longer needs is
    released when the worker applies the amend. Validated like a placement
    (``oms.validation.amend_validate``: grid, minimum quantity, trading state,
    price band, limits). Locks the order row, then its balance. Raises
    ``OrderError`` (``not_authenticated`` 401, ``order_not_found``
    404, ``account_forbidden`` 403,
    ``order_not_open`` 409, ``nothing_to_amend`` 400 - also for an amend to what
    the order already has -, ``not_amendable`` 422, the placement's grid, state,
    band and limit codes); nothing is changed then.
    Side effects on commit: wakes the matcher, publishes the balance.
    """
    with transaction.atomic(durable=True):
        order = _order_for_trading(user, order_id, lock=True)
        terms = amend_validate(order, amend)
        price = terms.price
        remaining = terms.quantity - order.filled_quantity
        if order.side == Order.Side.BUY:
            needed = order_buy_reservation(order, price=price, quantity=remaining)
        else:
            needed = remaining
        if needed > order.held_amount:
            batch = LedgerBatch([(order.account_id, order.held_asset_id)])
            extra = needed - order.held_amount
            hold_post(
                batch, order.account, order.held_asset, extra, f"order:{order.pk}", user
            )
            batch.flush()
            order.held_amount = needed
            order.save(update_fields=["held_amount", "updated_at"])
            publish_on_commit(
                private_messages(orders=[], balances=batch.balances.values())
            )
        OrderRequest.objects.create(
            market_id=order.market_id,
            order=order,
            kind=OrderRequest.Kind.AMEND,
            quantity=amend.quantity,
            price=price if _amend_names_price(order, amend, price) else None,
            stop_price=amend.stop_price,
            requested_by_id=user.pk,
        )
        market_notify(order.symbol.market.code)
    return order


@retry_on_conflict
def order_cancel_all(
    *,
    user: User,
    account_id: int,
    symbol: str | None = None,
    side: str | None = None,
) -> list[Order]:
    """Queue a cancel for every open order of the account (optionally of one symbol
    and/or side); returns the orders. Orders already being cancelled are included
    but not queued twice. Locks no order row (lock order, docs/architecture.md).
    Raises ``OrderError`` (``account_forbidden``, ``unknown_symbol``, ``busy``)."""
    account = account_for_trading(user=user, account_id=account_id)
    orders = Order.objects.filter(account=account, status__in=OPEN_STATUSES)
    if symbol is not None:
        orders = orders.filter(symbol=symbol_resolve(symbol))
    if side is not None:
        orders = orders.filter(side=side)
    with transaction.atomic(durable=True):
        found = list(
            orders.select_related(
                "market", "symbol__market", "symbol__asset", "symbol__currency"
            ).order_by("pk")
        )
        _queue(found, OrderRequest.Kind.CANCEL, user)
    return found


def _queue(orders: list[Order], kind: str, user: User | None) -> int:
    """Queue a ``kind`` request (cancel/expire) for each order that has none
    waiting; wakes their markets on commit. Returns how many were queued.

    Precondition: inside a transaction. Takes no row lock: the inbox's partial
    unique index (one waiting cancel or expiry per order) drops a duplicate, even
    one a concurrent transaction is inserting (``ON CONFLICT DO NOTHING``). An
    order may end before its request is matched: the batch then records
    ``cancel_rejected:order_not_live``."""
    if not orders:
        return 0
    table = OrderRequest._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "  # noqa: S608 (the table name is ours)
            "(market_id, order_id, kind, requested_by_id, created_at) "
            "SELECT market_id, order_id, %s, %s, now() "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS t(market_id, order_id) "
            "ON CONFLICT DO NOTHING RETURNING id",
            [
                kind,
                None if user is None else user.pk,
                [order.market_id for order in orders],
                [order.pk for order in orders],
            ],
        )
        queued = len(cursor.fetchall())
    if queued:
        for code in sorted({order.market.code for order in orders}):
            market_notify(code)
    return queued


@retry_on_conflict
def orders_expire_due(
    *, now: datetime | None = None, market: Market | None = None
) -> int:
    """Queue the expiry of every open order whose ``expire_at`` has passed (GTD at
    its time, DAY at the end of its trading date), optionally of one market.
    Idempotent (an order with an expiry or cancel waiting is skipped) and safe to
    run concurrently; returns how many expiries were queued. The matching worker
    carries them out and releases the reservations."""
    orders = Order.objects.filter(
        status__in=OPEN_STATUSES, expire_at__lte=now or timezone.now()
    )
    if market is not None:
        orders = orders.filter(market=market)
    return _expire(orders)


def orders_expire_day(*, market: Market) -> int:
    """Queue the expiry of every open DAY order of ``market`` (its session closed):
    every one of them, whoever holds a lock on it (no row lock is taken)."""
    return _expire(
        Order.objects.filter(
            market=market,
            status__in=OPEN_STATUSES,
            time_in_force=Order.TimeInForce.DAY,
        )
    )


def _expire(orders: QuerySet[Order]) -> int:
    with transaction.atomic():
        found = list(orders.select_related("market").order_by("pk"))
        return _queue(found, OrderRequest.Kind.EXPIRE, None)


def orders_expire_at_close(
    market: Market, previous: TradingState, new: TradingState, now: datetime
) -> None:
    """Market transition hook: when a market closes, its DAY orders expire (the
    matching worker uncrosses a closing auction first, then carries out the
    expiries in the same order as they were queued)."""
    if new.code == Market.State.CLOSED and previous.code != Market.State.CLOSED:
        orders_expire_day(market=market)
