"""The staff console for the exchange: markets, symbols, holidays, trades.

Markets are created by ``market_create`` (with the standard trading states) and
change state only through the "Halt", "Resume", "Open", "Close" and "Set state"
actions (``market_set_state`` / ``market_state_set``; a halt and a set state ask
for a reason on an intermediate page). A market's trading states and regular
session timetable are edited inline on its page, special days (early closes,
alternative timetables) and tick tables on their own pages; every such edit is
audited. Symbols are issued by ``symbol_issue`` from a custom add form and
suspended/resumed by actions (``symbol_suspend``/``symbol_resume``). Trades and
stream sequences are read-only, except that staff with the
``exchange.change_trade`` permission may bust trades (an action asking for a
reason: ``trade_bust``) or correct one (the "Correct" link on a trade:
``trade_correct``), and settle due trades now.
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.forms import BaseForm, BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from exchange.busts import trade_bust, trade_correct
from exchange.calendar import scheduled_state
from exchange.fees import (
    fee_group_delete,
    fee_group_save,
    fee_schedule_delete,
    fee_schedule_save,
)
from exchange.models import (
    PRICE,
    STANDARD_TRADING_STATES,
    FeeSchedule,
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
from exchange.settlement import SettlementResult, settlement_run
from registry.admin import (
    FORM_TEMPLATE,
    AuditedModelAdmin,
    ReadOnlyAdminMixin,
    adopt_saved,
    form_changes,
    form_error_from,
    object_missing_redirect,
    search_term_id,
)
from registry.models import AMOUNT, FeeGroup
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
    "self_trade_prevention",
    "settlement_days",
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
        "settle_due_trades",
    ]

    def get_fields(
        self, request: HttpRequest, obj: Market | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return tuple(MARKET_ADD_FIELDS)
        return (
            *MARKET_ADD_FIELDS,
            "state",
            "state_reason",
            "schedule_enabled",
            "schedule_now",
            "price_band_percent",
            "circuit_breaker_percent",
            "cooling_off_seconds",
        )

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


class SpecialSessionFormSet(BaseInlineFormSet):
    """A special day's timetable entries belong to the special day's market."""

    def add_fields(self, form: Any, index: int | None) -> None:
        super().add_fields(form, index)
        form.instance.market_id = self.instance.market_id


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
        self,
        request: HttpRequest,
        form: "forms.ModelForm[SpecialDay]",
        formset: Any,
        change: bool,
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
            return object_missing_redirect(self, request, object_id)
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
