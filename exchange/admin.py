"""The staff console for the exchange: markets, symbols, holidays, trades.

Markets are created by ``market_create`` and change state only through the
"Halt", "Resume", "Open" and "Close" actions (``market_set_state``; a halt asks for
a reason on an intermediate page). Symbols are issued by ``symbol_issue`` from a
custom add form. Trades and stream sequences are read-only, except that staff with
the ``exchange.change_trade`` permission may bust trades (an action asking for a
reason: ``trade_bust``) or correct one (the "Correct" link on a trade:
``trade_correct``).
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from exchange.busts import trade_bust, trade_correct
from exchange.fees import (
    fee_group_delete,
    fee_group_save,
    fee_schedule_delete,
    fee_schedule_save,
)
from exchange.models import (
    PRICE,
    FeeSchedule,
    Holiday,
    Market,
    StreamSequence,
    Symbol,
    Trade,
)
from exchange.services import (
    MarketStateError,
    market_create,
    market_set_state,
    symbol_issue,
)
from exchange.settlement import SettlementResult, settlement_run
from registry.admin import (
    FORM_TEMPLATE,
    AuditedModelAdmin,
    ReadOnlyAdminMixin,
    adopt_saved,
    form_error_from,
    search_term_id,
)
from registry.models import AMOUNT, FeeGroup
from registry.services import RegistryError

#: action -> (past tense for the success message)
MARKET_ACTION_DONE = {
    "halt": "Halted",
    "resume": "Resumed",
    "open": "Opened",
    "close": "Closed",
}


class MarketHaltForm(forms.Form):
    reason = forms.CharField(
        max_length=200, help_text="Shown to clients with the market's state."
    )


@admin.register(Market)
class MarketAdmin(AuditedModelAdmin):
    list_display = ["code", "name", "state", "state_reason", "currency", "timezone"]
    list_filter = ["state"]
    list_select_related = ["currency"]
    search_fields = ["code", "name"]
    autocomplete_fields = ["currency", "fee_account"]
    actions = [
        "halt_markets",
        "resume_markets",
        "open_markets",
        "close_markets",
        "settle_due_trades",
    ]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Market | None = None
    ) -> list[str]:
        # State changes only by the actions (audited, published); the code and
        # currency are copied into symbols and stream topics.
        if obj is None:
            return ["state", "state_reason"]
        return ["code", "currency", "state", "state_reason"]

    def has_delete_permission(
        self, request: HttpRequest, obj: Market | None = None
    ) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: Market, form: BaseForm, change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        market = market_create(
            code=obj.code,
            name=obj.name,
            currency=obj.currency,
            timezone_name=obj.timezone,
            acting_user=request.user,
            maker_fee_bps=obj.maker_fee_bps,
            taker_fee_bps=obj.taker_fee_bps,
            market_order_collar_percent=obj.market_order_collar_percent,
            fee_account=obj.fee_account,
            settlement_days=obj.settlement_days,
        )
        adopt_saved(obj, market)

    @admin.action(description="Settle due trades now", permissions=["change"])
    def settle_due_trades(
        self, request: HttpRequest, queryset: QuerySet[Market]
    ) -> None:
        """``settlement_run`` for the selected markets, as the staff user (audited
        per market); idempotent, so running it while the beat job runs is safe."""
        result = settlement_run(
            acting_user=request.user,
            market_ids=list(queryset.values_list("pk", flat=True)),
        )
        settlement_message(self, request, result)

    @admin.action(description="Halt selected markets", permissions=["change"])
    def halt_markets(
        self, request: HttpRequest, queryset: QuerySet[Market]
    ) -> HttpResponse | None:
        """Ask for the reason first; the confirmation page posts back with it."""
        form = MarketHaltForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            self._set_state(request, queryset, "halt", form.cleaned_data["reason"])
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Halt markets",
            "intro": "Halt trading on these markets? Cancels are still carried out.",
            "form": form,
            "queryset": queryset,
            "action": "halt_markets",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit_label": "Halt",
            "cancel_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/xchange/market_action_confirmation.html", context
        )

    @admin.action(description="Resume selected markets", permissions=["change"])
    def resume_markets(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_state(request, queryset, "resume")

    @admin.action(description="Open selected markets", permissions=["change"])
    def open_markets(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_state(request, queryset, "open")

    @admin.action(description="Close selected markets", permissions=["change"])
    def close_markets(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        self._set_state(request, queryset, "close")

    def _set_state(
        self,
        request: HttpRequest,
        queryset: QuerySet[Market],
        action: str,
        reason: str = "",
    ) -> None:
        """Apply ``action`` to each market; one that refuses is left unchanged."""
        done = []
        for market in queryset.order_by("code"):
            try:
                market_set_state(
                    market=market,
                    action=action,
                    acting_user=request.user,
                    reason=reason,
                )
            except MarketStateError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                done.append(market.code)
        if done:
            self.message_user(
                request,
                f"{MARKET_ACTION_DONE[action]} {', '.join(done)}.",
                messages.SUCCESS,
            )


class SymbolIssueForm(forms.Form):
    """The fields of ``symbol_issue``: a new security asset listed on a market."""

    market = forms.ModelChoiceField(queryset=Market.objects.all())
    code = forms.CharField(max_length=Symbol._meta.get_field("code").max_length)
    name = forms.CharField(max_length=Symbol._meta.get_field("name").max_length)
    tick_size = forms.DecimalField(
        max_digits=PRICE["max_digits"],
        decimal_places=PRICE["decimal_places"],
        initial=Decimal("0.01"),
    )
    lot_size = forms.DecimalField(
        max_digits=AMOUNT["max_digits"],
        decimal_places=AMOUNT["decimal_places"],
        initial=Decimal(1),
    )
    min_quantity = forms.DecimalField(
        max_digits=AMOUNT["max_digits"],
        decimal_places=AMOUNT["decimal_places"],
        required=False,
        help_text="Leave empty for one lot.",
    )
    scale = forms.IntegerField(
        min_value=0,
        max_value=10,
        initial=0,
        help_text="Decimal places of the security's quantities.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("tick_size", "lot_size", "min_quantity"):
            value = cleaned.get(name)
            if value is not None and value <= 0:
                self.add_error(name, "Must be positive.")
        return cleaned


@admin.register(Symbol)
class SymbolAdmin(AuditedModelAdmin):
    list_display = [
        "identifier",
        "name",
        "status",
        "currency",
        "tick_size",
        "lot_size",
        "min_quantity",
    ]
    list_filter = ["market", "status"]
    list_select_related = ["market", "currency"]
    search_fields = ["code", "name", "market__code"]
    fields = [
        "market",
        "code",
        "name",
        "status",
        "asset",
        "currency",
        "tick_size",
        "lot_size",
        "min_quantity",
    ]
    readonly_fields = [
        "market",
        "code",
        "asset",
        "currency",
        "tick_size",
        "lot_size",
        "min_quantity",
    ]

    @admin.display(ordering="market__code", description="symbol")
    def identifier(self, symbol: Symbol) -> str:
        return symbol.identifier

    def has_delete_permission(
        self, request: HttpRequest, obj: Symbol | None = None
    ) -> bool:
        # Orders and trades refer to symbols: they are delisted, not deleted.
        return False

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Issue a symbol through ``symbol_issue``; its errors show on the form."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = SymbolIssueForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                symbol = symbol_issue(**form.cleaned_data, acting_user=request.user)
            except RegistryError as error:
                form_error_from(form, error)
            else:
                self.log_addition(request, symbol, [{"added": {}}])
                self.message_user(
                    request, f"Issued {symbol.identifier}.", messages.SUCCESS
                )
                opts = self.opts
                return HttpResponseRedirect(
                    reverse(
                        f"admin:{opts.app_label}_{opts.model_name}_change",
                        args=[symbol.pk],
                    )
                )
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "opts": self.opts,
            "title": "Issue a symbol",
            "form": form,
            "media": self.media + form.media,
            "submit_label": "Issue",
            "cancel_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)


@admin.register(Holiday)
class HolidayAdmin(AuditedModelAdmin):
    list_display = ["market", "date", "name"]
    list_filter = ["market"]
    list_select_related = ["market"]
    search_fields = ["name", "market__code"]
    autocomplete_fields = ["market"]
    date_hierarchy = "date"


class TradeBustForm(forms.Form):
    reason = forms.CharField(
        max_length=160,
        help_text="Recorded on the trade, its bust entry and audit trail.",
    )


class TradeCorrectForm(forms.Form):
    price = forms.DecimalField(
        max_digits=PRICE["max_digits"],
        decimal_places=PRICE["decimal_places"],
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    quantity = forms.DecimalField(
        max_digits=AMOUNT["max_digits"],
        decimal_places=AMOUNT["decimal_places"],
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    reason = forms.CharField(max_length=160)


def settlement_message(
    model_admin: admin.ModelAdmin, request: HttpRequest, result: SettlementResult
) -> None:
    model_admin.message_user(
        request, f"Settled {len(result.settled)} due trades.", messages.SUCCESS
    )
    if result.failed:
        model_admin.message_user(
            request,
            "Could not settle trades "
            + ", ".join(str(pk) for pk in result.failed)
            + " (see the log).",
            messages.ERROR,
        )


@admin.register(FeeGroup)
class FeeGroupAdmin(admin.ModelAdmin):
    """Fee tiers. Accounts join one from the account page; the group's rates per
    market are fee schedules. Saved and deleted through ``exchange.fees``
    services (audited); a group in use cannot be deleted."""

    list_display = ["name", "description"]
    search_fields = ["name"]

    def save_model(
        self, request: HttpRequest, obj: FeeGroup, form: BaseForm, change: bool
    ) -> None:
        adopt_saved(obj, fee_group_save(fee_group=obj, acting_user=request.user))

    def delete_model(self, request: HttpRequest, obj: FeeGroup) -> None:
        fee_group_delete(fee_group=obj, acting_user=request.user)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[FeeGroup]
    ) -> None:
        for fee_group in queryset:
            fee_group_delete(fee_group=fee_group, acting_user=request.user)


@admin.register(FeeSchedule)
class FeeScheduleAdmin(admin.ModelAdmin):
    """Maker/taker rates and minimum fee per market and fee group (empty group:
    the market's default). Saved and deleted through ``exchange.fees`` services
    (audited); open orders keep the rates they were placed under."""

    list_display = [
        "market",
        "fee_group",
        "maker_fee_bps",
        "taker_fee_bps",
        "min_fee",
    ]
    list_filter = ["market", "fee_group"]
    list_select_related = ["market", "fee_group"]
    search_fields = ["market__code", "fee_group__name"]
    autocomplete_fields = ["market", "fee_group"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: FeeSchedule | None = None
    ) -> list[str]:
        return ["market"] if obj is not None else []

    def save_model(
        self, request: HttpRequest, obj: FeeSchedule, form: BaseForm, change: bool
    ) -> None:
        adopt_saved(obj, fee_schedule_save(schedule=obj, acting_user=request.user))

    def delete_model(self, request: HttpRequest, obj: FeeSchedule) -> None:
        fee_schedule_delete(schedule=obj, acting_user=request.user)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[FeeSchedule]
    ) -> None:
        for schedule in queryset.select_related("market", "fee_group"):
            fee_schedule_delete(schedule=schedule, acting_user=request.user)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "symbol",
        "seq",
        "price",
        "quantity",
        "value",
        "aggressor_side",
        "buy_order_id",
        "sell_order_id",
        "buyer",
        "seller",
        "executed_at",
        "busted_at",
        "settlement_date",
        "settled_at",
    ]
    list_filter = [
        "aggressor_side",
        "symbol__market",
        ("busted_at", admin.EmptyFieldListFilter),
        ("settled_at", admin.EmptyFieldListFilter),
        "settlement_date",
    ]
    list_select_related = ["symbol__market", "buyer", "seller"]
    search_fields = ["symbol__code"]
    search_help_text = "An order id finds the trades of that order."
    show_full_result_count = False
    actions = ["bust_trades", "settle_due_trades"]
    change_form_template = "admin/xchange/trade_change_form.html"

    def has_settle_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("exchange.change_market"))

    @admin.action(
        description="Settle the selected due trades now", permissions=["settle"]
    )
    def settle_due_trades(
        self, request: HttpRequest, queryset: QuerySet[Trade]
    ) -> None:
        """``settlement_run`` limited to the selected trades whose settlement date
        has come (others are left), as the staff user (audited per market)."""
        result = settlement_run(
            acting_user=request.user,
            trade_ids=list(queryset.values_list("pk", flat=True)),
        )
        settlement_message(self, request, result)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Trade], search_term: str
    ) -> tuple[QuerySet[Trade], bool]:
        order_id = search_term_id(search_term)
        if order_id is not None:
            return (
                queryset.filter(Q(buy_order_id=order_id) | Q(sell_order_id=order_id)),
                False,
            )
        return super().get_search_results(request, queryset, search_term)

    def has_bust_permission(self, request: HttpRequest) -> bool:
        """Busting and correcting need the ``exchange.change_trade`` permission
        (trades are otherwise read-only in the console)."""
        return request.user.has_perm("exchange.change_trade")

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> HttpResponse:
        context["has_bust_permission"] = self.has_bust_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.action(description="Bust selected trades", permissions=["bust"])
    def bust_trades(
        self, request: HttpRequest, queryset: QuerySet[Trade]
    ) -> HttpResponse | None:
        """Ask for the reason first; the confirmation page posts back with it, and
        each trade is busted by ``trade_bust`` on its own (one that refuses is
        reported and left as it was)."""
        form = TradeBustForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            self._bust(request, queryset, form.cleaned_data["reason"])
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Bust trades",
            "intro": "Reverse these trades in the ledger? Both sides get back what "
            "each trade moved, fees included; the orders keep their fills.",
            "form": form,
            "queryset": queryset.order_by("pk"),
            "action": "bust_trades",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit_label": "Bust",
            "cancel_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/xchange/trade_bust_confirmation.html", context
        )

    def _bust(
        self, request: HttpRequest, queryset: QuerySet[Trade], reason: str
    ) -> None:
        done = []
        for trade in queryset.order_by("pk"):
            try:
                trade_bust(trade=trade, acting_user=request.user, reason=reason)
            except RegistryError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                done.append(str(trade.pk))
        if done:
            self.message_user(
                request, f"Busted trade(s) {', '.join(done)}.", messages.SUCCESS
            )

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        return [
            path(
                "<path:object_id>/correct/",
                self.admin_site.admin_view(self.correct_view),
                name=f"{opts.app_label}_{opts.model_name}_correct",
            ),
            *super().get_urls(),
        ]

    def correct_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Bust a trade and book a replacement at a corrected price and quantity
        (``trade_correct``); its errors show on the form and change nothing."""
        trade = self.get_object(request, unquote(object_id))
        if trade is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_bust_permission(request):
            raise PermissionDenied
        form = TradeCorrectForm(
            request.POST if request.method == "POST" else None,
            initial={"price": trade.price, "quantity": trade.quantity},
        )
        opts = self.opts
        if form.is_valid():
            try:
                result = trade_correct(
                    trade=trade, acting_user=request.user, **form.cleaned_data
                )
            except RegistryError as error:
                form_error_from(form, error)
            else:
                self.message_user(
                    request,
                    f"Busted trade {trade.pk} and booked trade "
                    f"{result.correction.pk} in its place.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse(
                        f"admin:{opts.app_label}_{opts.model_name}_change",
                        args=[result.correction.pk],
                    )
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "original": trade,
            "title": f"Correct trade {trade.pk}",
            "form": form,
            "media": self.media + form.media,
            "submit_label": "Bust and book the correction",
            "cancel_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[trade.pk]
            ),
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)


@admin.register(StreamSequence)
class StreamSequenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["topic", "seq"]
    search_fields = ["topic"]
