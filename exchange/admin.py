"""The staff console for the exchange: markets, symbols, holidays, trades.

Markets are created by ``market_create`` (with the standard trading states) and
change state only through the "Halt", "Resume", "Open", "Close" and "Set state"
actions (``market_set_state`` / ``market_state_set``; a halt and a set state ask
for a reason on an intermediate page). A market's trading states and regular
session timetable are edited inline on its page, special days (early closes,
alternative timetables) and tick tables on their own pages; every such edit is
audited. Symbols are issued by ``symbol_issue`` from a custom add form and
suspended/resumed by actions (``symbol_suspend``/``symbol_resume``). Trades and
stream sequences are read-only.
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.forms import BaseForm, BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from exchange.calendar import scheduled_state
from exchange.models import (
    PRICE,
    STANDARD_TRADING_STATES,
    Holiday,
    Market,
    MarketSession,
    SpecialDay,
    StreamSequence,
    Symbol,
    TickBand,
    TickTable,
    Trade,
    TradingState,
    tick_table_grid_error,
)
from exchange.services import (
    MarketStateError,
    market_create,
    market_set_state,
    market_state_set,
    symbol_issue,
    symbol_resume,
    symbol_suspend,
)
from registry.admin import (
    FORM_TEMPLATE,
    AuditedModelAdmin,
    ReadOnlyAdminMixin,
    adopt_saved,
    form_changes,
    form_error_from,
    search_term_id,
)
from registry.models import AMOUNT
from registry.services import RegistryError, audit_record

#: action -> (past tense for the success message)
MARKET_ACTION_DONE = {
    "halt": "Halted",
    "resume": "Resumed",
    "open": "Opened",
    "close": "Closed",
    "set_state": "Set the state of",
}


class MarketHaltForm(forms.Form):
    reason = forms.CharField(
        max_length=200, help_text="Shown to clients with the market's state."
    )


class MarketStateForm(forms.Form):
    """Any trading state of the selected markets, with the reason."""

    state = forms.ChoiceField(choices=[])
    reason = forms.CharField(
        max_length=200, help_text="Shown to clients with the market's state."
    )

    def __init__(self, *args: Any, markets: QuerySet[Market], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        codes = (
            TradingState.objects.filter(market__in=markets)
            .order_by("code")
            .values_list("code", "name")
            .distinct()
        )
        state_field = self.fields["state"]
        assert isinstance(state_field, forms.ChoiceField)
        state_field.choices = [(code, f"{name} ({code})") for code, name in codes]


def audited_formset_save(request: HttpRequest, formset: Any) -> None:
    """Save an inline formset, auditing each row added, changed or deleted."""
    with transaction.atomic():
        formset.save(commit=False)
        for obj in formset.deleted_objects:
            audit_record(
                actor=request.user,
                action=f"{obj._meta.model_name}_delete",
                target=obj,
                changes={"deleted": str(obj)},
            )
            obj.delete()
        for form in formset.forms:
            if form in formset.deleted_forms or not form.has_changed():
                continue
            change = form.instance.pk is not None
            form.instance.save()
            audit_record(
                actor=request.user,
                action=f"{form.instance._meta.model_name}_"
                f"{'change' if change else 'create'}",
                target=form.instance,
                changes=form_changes(form, change=change),
            )


class TradingStateFormSet(BaseInlineFormSet):
    """A state's code is its identity: it cannot change, and the standard states
    and states in use (the market's, a symbol's, in a timetable) stay."""

    def clean(self) -> None:
        super().clean()
        market = self.instance
        for form in self.forms:
            state = form.instance
            if state.pk is None:
                continue
            if "code" in form.changed_data:
                form.add_error("code", "A state's code cannot change.")
            if form in self.deleted_forms:
                why = _state_in_use(market, form.initial.get("code", state.code))
                if why:
                    raise ValidationError(f"Cannot delete {state.code}: {why}.")


def _state_in_use(market: Market, code: str) -> str:
    if code in STANDARD_TRADING_STATES:
        return "it is a standard state"
    if market.state == code:
        return "the market is in it"
    if market.symbols.filter(trading_state=code).exists():
        return "a symbol is in it"
    if MarketSession.objects.filter(market=market, state=code).exists():
        return "a timetable uses it"
    return ""


class TradingStateInline(admin.TabularInline):
    model = TradingState
    formset = TradingStateFormSet
    fields = [
        "code",
        "name",
        "allows_place",
        "allows_amend",
        "allows_cancel",
        "allows_match",
        "is_auction",
        "uncross_on_entry",
    ]
    extra = 0


class RegularSessionInline(admin.TabularInline):
    """The market's regular timetable (the entries of no special day)."""

    model = MarketSession
    fields = ["start", "state"]
    extra = 0
    verbose_name = "regular session"
    verbose_name_plural = "regular timetable (local times, business days)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[MarketSession]:
        return super().get_queryset(request).filter(special_day__isnull=True)


MARKET_ADD_FIELDS = [
    "code",
    "name",
    "timezone",
    "currency",
    "maker_fee_bps",
    "taker_fee_bps",
    "market_order_collar_percent",
    "fee_account",
]


@admin.register(Market)
class MarketAdmin(AuditedModelAdmin):
    list_display = [
        "code",
        "name",
        "state",
        "state_reason",
        "schedule_enabled",
        "currency",
        "timezone",
    ]
    list_filter = ["state", "schedule_enabled"]
    list_select_related = ["currency"]
    search_fields = ["code", "name"]
    autocomplete_fields = ["currency", "fee_account"]
    actions = [
        "halt_markets",
        "resume_markets",
        "open_markets",
        "close_markets",
        "set_state_markets",
    ]

    def get_fields(self, request: HttpRequest, obj: Market | None = None) -> list[str]:
        if obj is None:
            return MARKET_ADD_FIELDS
        return [
            *MARKET_ADD_FIELDS,
            "state",
            "state_reason",
            "schedule_enabled",
            "schedule_now",
            "price_band_percent",
            "circuit_breaker_percent",
            "cooling_off_seconds",
        ]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Market | None = None
    ) -> list[str]:
        # State changes only by the actions (audited, published); the code and
        # currency are copied into symbols and stream topics.
        if obj is None:
            return ["state", "state_reason"]
        return ["code", "currency", "state", "state_reason", "schedule_now"]

    def get_inlines(self, request: HttpRequest, obj: Market | None) -> list[Any]:
        # A new market gets the standard states from market_create.
        return [] if obj is None else [TradingStateInline, RegularSessionInline]

    @admin.display(description="timetable now")
    def schedule_now(self, market: Market) -> str:
        state, next_change = scheduled_state(market, timezone.now())
        if next_change is None:
            return f"{state}, no change ahead"
        local = next_change.astimezone(market.tzinfo)
        return f"{state} until {local:%Y-%m-%d %H:%M %Z}"

    def save_formset(
        self, request: HttpRequest, form: BaseForm, formset: Any, change: bool
    ) -> None:
        audited_formset_save(request, formset)

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
        )
        adopt_saved(obj, market)

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

    @admin.action(
        description="Set the state of selected markets", permissions=["change"]
    )
    def set_state_markets(
        self, request: HttpRequest, queryset: QuerySet[Market]
    ) -> HttpResponse | None:
        """Ask for the state and the reason; the confirmation page posts back."""
        form = MarketStateForm(
            request.POST if "confirm" in request.POST else None, markets=queryset
        )
        if form.is_valid():
            self._set_state(
                request,
                queryset,
                "set_state",
                form.cleaned_data["reason"],
                state=form.cleaned_data["state"],
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Set the trading state",
            "intro": "Put these markets in a trading state? A market that follows "
            "its schedule returns to the scheduled state at the next run unless "
            "halted.",
            "form": form,
            "queryset": queryset,
            "action": "set_state_markets",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit_label": "Set state",
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
        state: str = "",
    ) -> None:
        """Apply ``action`` to each market; one that refuses is left unchanged."""
        done = []
        for market in queryset.order_by("code"):
            try:
                if action == "set_state":
                    market_state_set(
                        market=market,
                        state=state,
                        acting_user=request.user,
                        reason=reason,
                    )
                else:
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


class SymbolSuspendForm(forms.Form):
    reason = forms.CharField(
        max_length=200, help_text="Shown to clients with the symbol's state."
    )


@admin.register(Symbol)
class SymbolAdmin(AuditedModelAdmin):
    list_display = [
        "identifier",
        "name",
        "status",
        "trading_state",
        "state_reason",
        "currency",
        "tick_size",
        "tick_table",
        "lot_size",
        "min_quantity",
    ]
    list_filter = ["market", "status", "trading_state"]
    list_select_related = ["market", "currency", "tick_table"]
    search_fields = ["code", "name", "market__code"]
    autocomplete_fields = ["tick_table"]
    actions = ["suspend_symbols", "resume_symbols"]
    fields = [
        "market",
        "code",
        "name",
        "status",
        "trading_state",
        "state_reason",
        "halted_until",
        "asset",
        "currency",
        "tick_size",
        "tick_table",
        "lot_size",
        "min_quantity",
        "max_quantity",
        "min_value",
        "max_value",
        "price_band_percent",
    ]
    readonly_fields = [
        "market",
        "code",
        "trading_state",
        "state_reason",
        "halted_until",
        "asset",
        "currency",
        "tick_size",
        "lot_size",
        "min_quantity",
    ]

    @admin.action(description="Suspend selected symbols", permissions=["change"])
    def suspend_symbols(
        self, request: HttpRequest, queryset: QuerySet[Symbol]
    ) -> HttpResponse | None:
        """Ask for the reason first; the confirmation page posts back with it."""
        form = SymbolSuspendForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            self._symbol_action(
                request, queryset, "suspend", form.cleaned_data["reason"]
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Suspend symbols",
            "intro": "Suspend trading in these symbols? Cancels are still carried "
            "out; the suspension holds until resumed.",
            "form": form,
            "queryset": queryset.select_related("market"),
            "action": "suspend_symbols",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit_label": "Suspend",
            "cancel_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/xchange/symbol_action_confirmation.html", context
        )

    @admin.action(description="Resume selected symbols", permissions=["change"])
    def resume_symbols(self, request: HttpRequest, queryset: QuerySet[Symbol]) -> None:
        self._symbol_action(request, queryset, "resume")

    def _symbol_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[Symbol],
        action: str,
        reason: str = "",
    ) -> None:
        """Apply ``action`` to each symbol; one that refuses is left unchanged."""
        service = symbol_suspend if action == "suspend" else symbol_resume
        done = []
        symbols = queryset.select_related("market__currency").order_by(
            "market__code", "code"
        )
        for symbol in symbols:
            try:
                service(symbol=symbol, acting_user=request.user, reason=reason)
            except RegistryError as error:
                self.message_user(request, error.message, messages.ERROR)
            else:
                done.append(symbol.identifier)
        if done:
            verb = "Suspended" if action == "suspend" else "Resumed"
            self.message_user(request, f"{verb} {', '.join(done)}.", messages.SUCCESS)

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


class SpecialSessionFormSet(BaseInlineFormSet):
    """A special day's timetable entries belong to the special day's market."""

    def _construct_form(self, i: int, **kwargs: Any) -> Any:
        form = super()._construct_form(i, **kwargs)
        form.instance.market_id = self.instance.market_id
        return form


class SpecialSessionInline(admin.TabularInline):
    model = MarketSession
    formset = SpecialSessionFormSet
    fields = ["start", "state"]
    extra = 0
    verbose_name = "session"
    verbose_name_plural = (
        "alternative timetable (local times; empty: the regular timetable)"
    )


@admin.register(SpecialDay)
class SpecialDayAdmin(AuditedModelAdmin):
    """Early closes (``close_time``) and days with their own timetable."""

    list_display = ["market", "date", "name", "close_time"]
    list_filter = ["market"]
    list_select_related = ["market"]
    search_fields = ["name", "market__code"]
    autocomplete_fields = ["market"]
    date_hierarchy = "date"
    inlines = [SpecialSessionInline]

    def save_formset(
        self, request: HttpRequest, form: BaseForm, formset: Any, change: bool
    ) -> None:
        for inline_form in formset.forms:
            inline_form.instance.market_id = form.instance.market_id
        audited_formset_save(request, formset)


class TickBandFormSet(BaseInlineFormSet):
    """Every band's tick must be a multiple of the flat tick of every symbol
    using the table (the engine counts in those ticks)."""

    def clean(self) -> None:
        super().clean()
        if any(form.errors for form in self.forms):
            return
        bands = [
            TickBand(
                from_price=form.cleaned_data["from_price"],
                tick_size=form.cleaned_data["tick_size"],
            )
            for form in self.forms
            if form.cleaned_data
            and form not in self.deleted_forms
            and form.cleaned_data.get("tick_size")
        ]
        if self.instance.pk is None:
            return
        for symbol in self.instance.symbols.select_related("market"):
            message = tick_table_grid_error(bands, symbol.tick_size)
            if message:
                raise ValidationError(f"{symbol.identifier}: {message}")


class TickBandInline(admin.TabularInline):
    model = TickBand
    formset = TickBandFormSet
    fields = ["from_price", "tick_size"]
    extra = 0


@admin.register(TickTable)
class TickTableAdmin(AuditedModelAdmin):
    list_display = ["name", "description"]
    search_fields = ["name"]
    inlines = [TickBandInline]
    # A table symbols use cannot be deleted (PROTECT): the admin lists them.

    def save_formset(
        self, request: HttpRequest, form: BaseForm, formset: Any, change: bool
    ) -> None:
        audited_formset_save(request, formset)


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
    ]
    list_filter = ["aggressor_side", "symbol__market"]
    list_select_related = ["symbol__market", "buyer", "seller"]
    search_fields = ["symbol__code"]
    search_help_text = "An order id finds the trades of that order."
    show_full_result_count = False

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


@admin.register(StreamSequence)
class StreamSequenceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["topic", "seq"]
    search_fields = ["topic"]
