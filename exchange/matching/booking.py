"""Booking a batch: trades, ledger postings, fees, releases, order rows, events and messages."""

import logging
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import (
    transaction,
)

from config.db import bulk_update_rows
from exchange import engine
from exchange.calendar import business_days_add, local_date
from exchange.fees import fill_fee, order_fee_rates
from exchange.matching.commands import book_topic, trades_topic
from exchange.matching.outcome import BatchOutcome, _batch_hooks
from exchange.matching.state import _Fill, _OrderState
from exchange.models import Market, Symbol, Trade
from exchange.services import symbols_circuit_break
from exchange.settlement import unsettled_proceeds_pending
from exchange.streams import Message, publish_on_commit, stream_advance, stream_message
from exchange.wire import trade_to_wire
from oms.models import (
    Order,
    OrderEvent,
    OrderRequest,
)
from oms.publish import private_messages
from oms.services import order_buy_reservation
from registry.ledger import LedgerBatch, Line
from registry.models import Account, Bucket, JournalEntry
from registry.services import system_account

if TYPE_CHECKING:
    from exchange.matching.worker import MatchingWorker

logger = logging.getLogger(__name__)


class BatchBooking:
    """The persistence half of a batch (``_Batch``): books what the engine did."""

    worker: "MatchingWorker"
    market: Market
    requests: list[OrderRequest]
    now: datetime
    states: dict[int, _OrderState]
    fills: list[_Fill]
    touched_levels: defaultdict[int, set[tuple[engine.Side, int]]]
    band_breaches: dict[int, int]
    auction_changes: dict[int, bool]
    trade_ids: set[int]
    unsettled_credited: defaultdict[tuple[int, int], Decimal]

    # -- persistence -----------------------------------------------------------------

    def _write(self) -> None:
        fee_account = self.market.fee_account or system_account(Account.Kind.FEES)
        keys: set[tuple[int, int]] = set()
        for fill in self.fills:
            for state in (fill.buy, fill.sell):
                keys.add((state.order.account_id, fill.symbol.currency_id))
                keys.add((state.order.account_id, fill.symbol.asset_id))
            keys.add((fee_account.pk, fill.symbol.currency_id))
        pairs = self._pairs()
        for state in self.states.values():
            if state.order.is_terminal or state.recheck_hold:
                keys.add((state.order.account_id, state.order.held_asset_id))
        for first, _second in pairs:
            keys.add((first.order.account_id, first.order.held_asset_id))
        ledger = LedgerBatch(keys)
        trades = self._create_trades()
        for fill, trade in zip(self.fills, trades, strict=True):
            self._post_trade(ledger, fee_account, fill, trade)
        paired = {state.order.pk for pair in pairs for state in pair}
        for state in self.states.values():
            if state.order.pk in paired:
                continue
            if state.order.is_terminal and state.order.held_amount:
                self._release(ledger, state, state.order.held_amount)
            elif state.recheck_hold:
                self._recheck_hold(ledger, state)
        for first, second in pairs:
            self._settle_pair(ledger, first, second)
        ledger.flush()
        self._symbols_update(trades)
        changed = [s for s in self.states.values() if s.changed]
        for state in changed:
            state.order.updated_at = self.now
        bulk_update_rows(
            Order,
            [s.order for s in changed],
            [
                "status",
                "status_reason",
                "quantity",
                "price",
                "stop_price",
                "visible_quantity",
                "filled_quantity",
                "filled_value",
                "fees",
                "fee_accrued",
                "held_amount",
                "held_unsettled",
                "priority",
                "updated_at",
            ],
        )
        events = [event for state in changed for event in state.events]
        for event in events:
            event.created_at = self.now
        OrderEvent.objects.bulk_create(events)
        OrderRequest.objects.filter(pk__in=[r.pk for r in self.requests]).update(
            processed_at=self.now
        )
        messages = self._market_messages(trades)
        outcome = BatchOutcome(
            market=self.market,
            now=self.now,
            trades=trades,
            symbols={
                symbol_id: self.worker.symbols[symbol_id]
                for symbol_id in {t.symbol_id for t in trades}
                | set(self.touched_levels)
            },
            books=self.worker.books,
            orders=[state.order for state in changed],
            entered_book=frozenset(
                state.order.pk for state in changed if state.entered_book
            ),
            left_book=frozenset(
                state.order.pk
                for state in changed
                if state.was_on_book and not state.on_book
            ),
        )
        for hook in _batch_hooks:
            messages += hook(outcome)
        messages += private_messages(
            orders=[s.order for s in changed],
            balances=[ledger.balances[key] for key in sorted(keys)],
        )
        publish_on_commit(messages)
        for callback in outcome.after_commit:
            transaction.on_commit(callback, robust=True)

    def _symbols_update(self, trades: list[Trade]) -> None:
        """After the balance locks: halt the symbols whose dynamic band stopped a
        trade (their books are in auction already), store each book's auction mode,
        and re-centre the bands of the symbols that traded."""
        worker = self.worker
        breaks = [
            (
                worker.symbols[symbol_id],
                self.now + timedelta(seconds=self.market.cooling_off_seconds),
                f"price {worker.symbols[symbol_id].from_ticks(price)} beyond the "
                "dynamic band",
            )
            for symbol_id, price in sorted(self.band_breaches.items())
        ]
        if breaks:
            for symbol in symbols_circuit_break(breaks=breaks):
                symbol.market = self.market
                worker.symbols[symbol.pk].trading_state = symbol.trading_state
                worker.symbols[symbol.pk].halted_until = symbol.halted_until
            self.touched_levels.update(
                {pk: self.touched_levels.get(pk, set()) for pk in self.band_breaches}
            )
        for symbol_id in set(self.auction_changes) | set(self.band_breaches):
            in_auction = worker.books[symbol_id].in_auction
            worker.symbols[symbol_id].book_in_auction = in_auction
            Symbol.objects.filter(pk=symbol_id).update(book_in_auction=in_auction)
        for symbol_id in {trade.symbol_id for trade in trades}:
            worker.band_set(symbol_id)

    def _create_trades(self) -> list[Trade]:
        if not self.fills:
            return []
        counts = Counter(trades_topic(fill.symbol) for fill in self.fills)
        next_seq = stream_advance(counts)
        trade_date = local_date(self.market, self.now)
        days = self.market.settlement_days
        # T+0 settles at the trade; T+n on the n-th business day after the trade's
        # date in the market's timezone.
        settlement_date = (
            business_days_add(self.market, trade_date, days) if days else trade_date
        )
        running: dict[int, tuple[Decimal, Decimal]] = {}
        trades = []
        for fill in self.fills:
            topic = trades_topic(fill.symbol)
            price = fill.symbol.from_ticks(fill.event.price)
            quantity = fill.symbol.from_lots(fill.event.quantity)
            value = fill.symbol.currency.quantize(price * quantity)
            buyer_fee, seller_fee = self._fees(fill, value, running)
            trades.append(
                Trade(
                    symbol=fill.symbol,
                    seq=next_seq[topic],
                    price=price,
                    quantity=quantity,
                    value=value,
                    buyer_fee=buyer_fee,
                    seller_fee=seller_fee,
                    aggressor_side=fill.aggressor,
                    buy_order_id=fill.buy.order.pk,
                    sell_order_id=fill.sell.order.pk,
                    buyer_id=fill.buy.order.account_id,
                    seller_id=fill.sell.order.account_id,
                    executed_at=self.now,
                    settlement_date=settlement_date,
                    settled_at=None if days else self.now,
                )
            )
            next_seq[topic] += 1
        created = Trade.objects.bulk_create(trades)
        self.trade_ids.update(trade.pk for trade in created)
        return created

    def _fees(
        self,
        fill: _Fill,
        value: Decimal,
        running: dict[int, tuple[Decimal, Decimal]],
    ) -> tuple[Decimal, Decimal]:
        """(buyer fee, seller fee) of a fill, by ``exchange.fees``: each order's
        cumulative fee after the fill (max of its minimum and its accrued rate x
        value, rounded down) minus what it was charged before, at the rates pinned
        on the order (taker for the aggressor); the seller's fee is capped at the
        fill's proceeds. ``running`` carries each order's (accrued, charged)
        through the batch's fills, in fill order."""
        fees = []
        for state, proceeds_cap in ((fill.buy, None), (fill.sell, value)):
            order = state.order
            accrued, charged = running.get(order.pk, (order.fee_accrued, order.fees))
            fee, accrued_after = fill_fee(
                rates=order_fee_rates(order),
                is_taker=fill.aggressor == order.side,
                value=value,
                accrued=accrued,
                charged=charged,
                currency=fill.symbol.currency,
                proceeds_cap=proceeds_cap,
            )
            running[order.pk] = (accrued_after, charged + fee)
            fees.append(fee)
        return fees[0], fees[1]

    def _post_trade(
        self, ledger: LedgerBatch, fee_account: Account, fill: _Fill, trade: Trade
    ) -> None:
        """Post one trade: the buyer's cash (value + fee) leaves ``held``, the
        seller's securities leave ``held``, fees go to the fee account. On a T+0
        market the seller's proceeds (value - fee) and the buyer's securities land
        in ``available``; otherwise in ``unsettled`` until ``settlement_run``."""
        symbol = fill.symbol
        currency = symbol.currency
        value = trade.value
        buy, sell = fill.buy.order, fill.sell.order
        buyer_fee, seller_fee = trade.buyer_fee, trade.seller_fee
        receive = Bucket.AVAILABLE if trade.settled_at else Bucket.UNSETTLED
        seller_position = ledger.balance(sell.account_id, symbol.asset_id)
        cost_out = Decimal(0)
        if seller_position.total:
            cost_out = currency.quantize(
                seller_position.cost * trade.quantity / seller_position.total
            )
        ledger.post(
            kind=JournalEntry.Kind.TRADE,
            lines=[
                Line(buy.account_id, currency.pk, Bucket.HELD, -(value + buyer_fee)),
                Line(sell.account_id, currency.pk, receive, value - seller_fee),
                Line(
                    fee_account.pk,
                    currency.pk,
                    Bucket.AVAILABLE,
                    buyer_fee + seller_fee,
                ),
                Line(sell.account_id, symbol.asset_id, Bucket.HELD, -trade.quantity),
                Line(buy.account_id, symbol.asset_id, receive, trade.quantity),
            ],
            reference=f"trade:{trade.pk}",
        )
        if receive == Bucket.UNSETTLED:
            self.unsettled_credited[(sell.account_id, currency.pk)] += (
                value - seller_fee
            )
        ledger.adjust_cost(buy.account_id, symbol.asset_id, value + buyer_fee)
        ledger.adjust_cost(sell.account_id, symbol.asset_id, -cost_out)
        self._charge_fee(fill, buy, value, buyer_fee)
        self._charge_fee(fill, sell, value, seller_fee)
        # A leg of a same-side OCO pair fills from the pair's shared hold.
        self._pool(fill.buy)
        self._pool(fill.sell)
        buy.held_amount -= value + buyer_fee
        # Fills spend the part of the hold drawn from unsettled cash first.
        buy.held_unsettled -= min(buy.held_unsettled, value + buyer_fee)
        sell.held_amount -= trade.quantity
        if fill.buy_remaining and self._frees_per_fill(fill.buy):
            # Keep exactly what the unfilled rest can still need (fees accrued and
            # charged so far included); free the rest, e.g. price improvement.
            # (Whatever a terminal order still holds is released after all fills.)
            needed = order_buy_reservation(buy, quantity=fill.buy_remaining)
            if buy.held_amount > needed:
                self._release(ledger, fill.buy, buy.held_amount - needed)

    def _frees_per_fill(self, state: _OrderState) -> bool:
        """Whether fills may free a buy's price improvement as they happen: not
        while an amend of the order waits (it may need the cash held for it), nor
        when its price or quantity changed in the batch (re-checked at the end)."""
        return not (
            state.recheck_hold
            or state.amends_waiting
            or self._partner(state) is not None
        )

    # -- OCO pairs on one side: one shared hold ------------------------------------

    def _partner(self, state: _OrderState) -> _OrderState | None:
        """The OCO partner sharing ``state``'s hold (same account and held asset:
        the pair is on one side), if any. Both legs are always loaded together."""
        partner_id = state.order.oco_with_id
        partner = None if partner_id is None else self.states.get(partner_id)
        if partner is None or partner.order.held_asset_id != state.order.held_asset_id:
            return None
        return partner

    def _pairs(self) -> list[tuple[_OrderState, _OrderState]]:
        """The same-side OCO pairs of which a leg changed in this batch."""
        pairs = []
        for state in self.states.values():
            partner = self._partner(state)
            if (
                partner is not None
                and state.order.pk < partner.order.pk
                and (state.changed or partner.changed)
            ):
                pairs.append((state, partner))
        return pairs

    def _pool(self, state: _OrderState) -> None:
        """Move the whole hold of ``state``'s pair onto ``state`` (the leg a fill
        is about to consume); ``_settle_pair`` splits it again at the end."""
        partner = self._partner(state)
        if partner is None or not partner.order.held_amount:
            return
        order, other = state.order, partner.order
        order.held_amount += other.held_amount
        order.held_unsettled += other.held_unsettled
        other.held_amount = other.held_unsettled = Decimal(0)
        state.changed = partner.changed = True

    def _need(self, order: Order) -> Decimal:
        """What an order's rest can still need (nothing once it ended)."""
        if order.is_terminal:
            return Decimal(0)
        if order.side == Order.Side.BUY:
            return order_buy_reservation(order)
        return order.remaining_quantity

    def _settle_pair(
        self, ledger: LedgerBatch, first: _OrderState, second: _OrderState
    ) -> None:
        """A same-side OCO pair holds what its larger leg needs (only one can
        execute), all of it on that leg: release the rest, e.g. once a leg ended
        (the other then holds exactly its own need). While an amend of an open
        leg waits nothing is released (the amend raised the hold for itself)."""
        keeper = (
            first if self._need(first.order) >= self._need(second.order) else second
        )
        self._pool(keeper)
        needed = self._need(keeper.order)
        held = keeper.order.held_amount
        waiting = any(
            s.amends_waiting and not s.order.is_terminal for s in (first, second)
        )
        if held > needed and not waiting:
            self._release(ledger, keeper, held - needed)
        elif held < needed:
            logger.error(
                "OCO pair %s/%s holds %s, needs %s",
                first.order.pk,
                second.order.pk,
                held,
                needed,
            )

    def _recheck_hold(self, ledger: LedgerBatch, state: _OrderState) -> None:
        """Release what a live order holds beyond what its rest can still need."""
        order = state.order
        if order.is_terminal or state.amends_waiting:
            return
        if order.side == Order.Side.BUY:
            needed = order_buy_reservation(order)
        else:
            needed = order.remaining_quantity
        if order.held_amount > needed:
            self._release(ledger, state, order.held_amount - needed)
        elif order.held_amount < needed:
            logger.error(
                "order %s holds %s, needs %s", order.pk, order.held_amount, needed
            )

    def _charge_fee(
        self, fill: _Fill, order: Order, value: Decimal, fee: Decimal
    ) -> None:
        """Record a fill's fee on the order (its accrued fee as ``_fees`` computed
        it for the same fill, in the same order)."""
        _, accrued_after = fill_fee(
            rates=order_fee_rates(order),
            is_taker=fill.aggressor == order.side,
            value=value,
            accrued=order.fee_accrued,
            charged=order.fees,
            currency=fill.symbol.currency,
        )
        order.fee_accrued = accrued_after
        order.fees += fee

    def _release(
        self, ledger: LedgerBatch, state: _OrderState, amount: Decimal
    ) -> None:
        """Release ``amount`` of an order's hold.

        The part of the hold drawn from unsettled cash stays in the hold as long
        as it can; the part of it released goes back to ``unsettled`` as far as
        the account's unsettled sale proceeds still pending settlement have room
        for it (what they no longer cover has settled meanwhile, so it is
        available), the rest to ``available``.
        """
        order = state.order
        key = (order.account_id, order.held_asset_id)
        from_unsettled = max(
            Decimal(0), order.held_unsettled - (order.held_amount - amount)
        )
        to_unsettled = (
            min(from_unsettled, self._unsettled_room(ledger, key))
            if from_unsettled
            else Decimal(0)
        )
        ledger.post(
            kind=JournalEntry.Kind.RELEASE,
            lines=[
                Line(*key, Bucket.HELD, -amount),
                Line(*key, Bucket.AVAILABLE, amount - to_unsettled),
                Line(*key, Bucket.UNSETTLED, to_unsettled),
            ],
            reference=f"order:{order.pk}",
        )
        order.held_amount -= amount
        order.held_unsettled -= from_unsettled
        state.changed = True

    def _unsettled_room(self, ledger: LedgerBatch, key: tuple[int, int]) -> Decimal:
        """How much more unsettled cash the account may hold: its sale proceeds
        still pending settlement (earlier batches' trades, plus what this batch
        credited so far) minus its unsettled bucket now."""
        account_id, asset_id = key
        pending = unsettled_proceeds_pending(
            account_id=account_id, asset_id=asset_id, exclude_ids=self.trade_ids
        )
        pending += self.unsettled_credited[key]
        return max(Decimal(0), pending - ledger.balance(*key).unsettled)

    def _market_messages(self, trades: list[Trade]) -> list[Message]:
        messages: list[Message] = []
        book_counts = Counter(
            book_topic(self.worker.symbols[symbol_id])
            for symbol_id, levels in self.touched_levels.items()
            if levels
        )
        next_seq = stream_advance(book_counts)
        for symbol_id, levels in sorted(self.touched_levels.items()):
            if not levels:
                continue
            symbol = self.worker.symbols[symbol_id]
            book = self.worker.books[symbol_id]
            bids: list[list[str | int]] = []
            asks: list[list[str | int]] = []
            for side, price in sorted(
                levels, key=lambda level: (level[0].value, level[1])
            ):
                quantity, count = book.level(side, price)
                row: list[str | int] = [
                    str(symbol.from_ticks(price)),
                    str(symbol.from_lots(quantity)),
                    count,
                ]
                (bids if side == engine.Side.BUY else asks).append(row)
            topic = book_topic(symbol)
            messages.append(
                stream_message(topic, next_seq[topic], {"bids": bids, "asks": asks})
            )
        for trade in trades:
            messages.append(
                stream_message(
                    trades_topic(trade.symbol), trade.seq, trade_to_wire(trade)
                )
            )
        return messages
