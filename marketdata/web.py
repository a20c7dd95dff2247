"""The retail web app: server-rendered pages over the same services as REST.

Every figure is shown as its wire string (``balance_to_wire``, ``order_to_wire``,
the book and trades snapshots), so the pages and the API never disagree on a
decimal. ``static/web/app.js`` keeps the pages live over the WebSocket stream; the
pages work without it.
"""

import re
import uuid
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from exchange.models import Market, Symbol
from exchange.selectors import book_snapshot, symbol_find, trades_snapshot
from marketdata.models import SecuritySummary
from oms.models import OPEN_STATUSES, Order
from oms.services import OrderError, OrderSpec, order_cancel, order_place
from oms.wire import order_to_wire
from registry.api import accounts_of
from registry.models import Account, AccountAccess, Asset, Balance
from registry.wire import balance_to_wire, holding_to_wire

BOOK_DEPTH = 10
RECENT_TRADES = 20
RECENT_ORDERS = 20

_DECIMAL = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")


class DecimalText(forms.CharField):
    """A plain decimal such as ``10.05``: no sign, exponent, NaN or infinity, and
    within the bounds of the database column."""

    def __init__(
        self, *, max_places: int, max_whole_digits: int, **kwargs: Any
    ) -> None:
        self.max_places = max_places
        self.max_whole_digits = max_whole_digits
        super().__init__(**kwargs)
        self.widget.attrs["maxlength"] = "40"

    def to_python(self, value: Any) -> Decimal | None:  # type: ignore[override]
        text = super().to_python(value)
        if text is None or text in self.empty_values:
            return None
        if len(text) > 40 or not _DECIMAL.fullmatch(text):
            raise forms.ValidationError(
                "Enter a positive decimal number such as 10.05.", code="invalid"
            )
        number = Decimal(text)
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > self.max_places:
            raise forms.ValidationError(
                f"At most {self.max_places} decimal places.", code="too_precise"
            )
        if number >= Decimal(10) ** self.max_whole_digits:
            raise forms.ValidationError(
                f"At most {self.max_whole_digits} digits before the decimal point.",
                code="too_large",
            )
        return number


class TicketForm(forms.Form):
    """The order ticket. The OMS decides everything beyond the syntax."""

    account = forms.TypedChoiceField(coerce=int)
    side = forms.ChoiceField(choices=Order.Side.choices, initial=Order.Side.BUY)
    type = forms.ChoiceField(choices=Order.Type.choices, initial=Order.Type.LIMIT)
    time_in_force = forms.ChoiceField(
        choices=Order.TimeInForce.choices,
        initial=Order.TimeInForce.GTC,
        label="Time in force",
    )
    # The bounds of the columns: Order.price (20, 8) and Order.quantity (30, 10).
    price = DecimalText(max_places=8, max_whole_digits=12, required=False)
    quantity = DecimalText(max_places=10, max_whole_digits=20)
    stop_price = DecimalText(max_places=8, max_whole_digits=12, required=False)
    trail_amount = DecimalText(max_places=8, max_whole_digits=12, required=False)
    display_quantity = DecimalText(
        max_places=10, max_whole_digits=20, required=False, label="Iceberg peak"
    )
    post_only = forms.ChoiceField(
        choices=Order.PostOnly.choices,
        initial=Order.PostOnly.NONE,
        label="Post only",
        required=False,
    )
    expire_at = forms.DateTimeField(
        required=False,
        label="Expires (GTD)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    # Generated per rendered ticket: submitting the same ticket twice places once.
    client_order_id = forms.CharField(
        max_length=64, required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args: Any, accounts: list[Account], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["account"]).choices = [
            (account.pk, f"{account.number} {account.name}") for account in accounts
        ]
        self.fields["price"].widget.attrs.update(
            {
                "inputmode": "decimal",
                "autocomplete": "off",
                "placeholder": "limit price",
            }
        )
        self.fields["quantity"].widget.attrs.update(
            {"inputmode": "decimal", "autocomplete": "off"}
        )

    def spec(self, symbol: Symbol) -> OrderSpec:
        data = self.cleaned_data
        return OrderSpec(
            account_id=data["account"],
            symbol=symbol.identifier,
            side=data["side"],
            type=data["type"],
            time_in_force=data["time_in_force"],
            quantity=data["quantity"],
            price=data["price"],
            client_order_id=data.get("client_order_id") or "",
            stop_price=data.get("stop_price"),
            trail_amount=data.get("trail_amount"),
            display_quantity=data.get("display_quantity"),
            post_only=data.get("post_only") or Order.PostOnly.NONE,
            expire_at=data.get("expire_at"),
        )


# -- helpers ------------------------------------------------------------------------


def _may_trade(account: Account) -> bool:
    return getattr(account, "caller_role", "") in AccountAccess.TRADING_ROLES


def _order_rows(orders: Any, trading_ids: set[int]) -> list[dict[str, Any]]:
    rows = []
    for order in orders:
        wire = order_to_wire(order)
        wire["is_open"] = order.status in OPEN_STATUSES
        wire["may_cancel"] = wire["is_open"] and order.account_id in trading_ids
        rows.append(wire)
    return rows


def _orders_query() -> Any:
    return Order.objects.select_related(
        "symbol__market", "symbol__asset", "symbol__currency"
    )


def _markets() -> list[dict[str, Any]]:
    markets = Market.objects.select_related("currency").order_by("code")
    symbols = (
        Symbol.objects.select_related("market")
        .filter(status=Symbol.Status.ACTIVE)
        .order_by("market__code", "code")
    )
    by_market: dict[int, list[Symbol]] = {}
    for symbol in symbols:
        by_market.setdefault(symbol.market_id, []).append(symbol)
    return [
        {"market": market, "symbols": by_market.get(market.pk, [])}
        for market in markets
    ]


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _symbol_or_404(identifier: str) -> Symbol:
    symbol = symbol_find(identifier)
    if symbol is None:
        raise Http404(f"There is no symbol {identifier}.")
    return symbol


# -- pages --------------------------------------------------------------------------


def home(request: HttpRequest) -> HttpResponse:
    """The dashboard; signed out, a short welcome with the market list."""
    if not request.user.is_authenticated:
        return render(request, "web/welcome.html", {"markets": _markets()})
    return dashboard(request)


def dashboard(request: HttpRequest) -> HttpResponse:
    accounts = list(accounts_of(request.user))
    selected: Account | None = accounts[0] if accounts else None
    wanted = request.GET.get("account")
    if wanted:
        selected = next((a for a in accounts if str(a.pk) == wanted), None)
        if selected is None:
            raise Http404("No such account.")
    trading_ids = {a.pk for a in accounts if _may_trade(a)}
    context: dict[str, Any] = {
        "accounts": accounts,
        "selected": selected,
        "markets": _markets(),
        "trading_ids": " ".join(str(pk) for pk in sorted(trading_ids)),
    }
    if selected is not None:
        positions = (
            Balance.objects.filter(account=selected)
            .select_related("asset")
            .order_by("asset__code")
        )
        context["balances"] = [
            balance_to_wire(b) for b in positions if b.asset.kind == Asset.Kind.CURRENCY
        ]
        context["holdings"] = [
            holding_to_wire(b)
            for b in positions
            if b.asset.kind == Asset.Kind.SECURITY and b.total
        ]
        orders = _orders_query().filter(account=selected)
        context["open_orders"] = _order_rows(
            orders.filter(status__in=OPEN_STATUSES).order_by("-id"), trading_ids
        )
        context["recent_orders"] = _order_rows(
            orders.order_by("-id")[:RECENT_ORDERS], trading_ids
        )
        context["may_trade"] = selected.pk in trading_ids
    return render(request, "web/dashboard.html", context)


@login_required
def trade(request: HttpRequest, identifier: str) -> HttpResponse:
    """A symbol: L1 header, book, recent trades, the user's orders and the ticket."""
    symbol = _symbol_or_404(identifier)
    accounts = list(accounts_of(request.user))
    tradable = [a for a in accounts if _may_trade(a)]
    status = 200
    if request.method == "POST":
        form = TicketForm(request.POST, accounts=tradable)
        if form.is_valid():
            try:
                result = order_place(user=request.user, spec=form.spec(symbol))
            except OrderError as error:
                field = error.field if error.field in form.fields else None
                form.add_error(field, error.message)
            else:
                order = result.order
                if result.created:
                    messages.success(
                        request, f"Order {order.pk} placed ({order.status})"
                    )
                else:
                    messages.info(
                        request, f"Order {order.pk} was already placed ({order.status})"
                    )
                url = reverse("web:trade", args=[symbol.identifier])
                return HttpResponseRedirect(f"{url}?account={order.account_id}")
        status = 400
    else:
        wanted = request.GET.get("account", "")
        initial_account = next(
            (a.pk for a in tradable if str(a.pk) == wanted),
            tradable[0].pk if tradable else None,
        )
        form = TicketForm(
            accounts=tradable,
            initial={"account": initial_account, "client_order_id": uuid.uuid4().hex},
        )

    book = book_snapshot(symbol, BOOK_DEPTH)
    trades = trades_snapshot(symbol, RECENT_TRADES)["trades"]
    # The summary's last (busted trades excluded), the same figure as REST's.
    last = (
        SecuritySummary.objects.filter(symbol=symbol)
        .values_list("last", flat=True)
        .first()
    )
    trading_ids = {a.pk for a in tradable}
    orders = _order_rows(
        _orders_query()
        .filter(symbol=symbol, account__in=[a.pk for a in accounts])
        .order_by("-id")[:RECENT_ORDERS],
        trading_ids,
    )
    context = {
        "symbol": symbol,
        "market": symbol.market,
        "book": book,
        "best_bid": book["bids"][0] if book["bids"] else None,
        "best_ask": book["asks"][0] if book["asks"] else None,
        "last": None if last is None else str(symbol.format_price(last)),
        "trades": trades,
        "orders": orders,
        "form": form if tradable else None,
        "trading_ids": " ".join(str(pk) for pk in sorted(trading_ids)),
    }
    return render(request, "web/trade.html", context, status=status)


@require_POST
@login_required
def cancel(request: HttpRequest, order_id: int) -> HttpResponse:
    """Ask for an order's cancellation; the result arrives on the orders stream."""
    try:
        order = order_cancel(user=request.user, order_id=order_id)
    except OrderError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Cancel requested for order {order.pk}")
    return redirect(_safe_next(request, reverse("web:home")))
