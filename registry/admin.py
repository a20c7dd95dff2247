"""The staff console for the registry: assets, accounts, access, the ledger, audit.

Every write goes through a registry service with ``acting_user=request.user``:
accounts are opened by ``account_open``, access is granted by
``account_access_grant``; the account page links to money views that call
``cash_deposit``, ``security_issue``, ``withdrawal_request`` (staff on the client's
behalf) and ``security_transfer``; transfers and their approval live in
``registry.admin_transfers``. Direct edits of
configuration go through :class:`AuditedModelAdmin`, which writes an audit record
naming the staff user in the same transaction. Ledger rows, balances and audit
records are read-only. The account page also links to its balances and holdings
as at a past instant and to its statement.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import F, Model, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from registry.admin_limits import WithdrawalLimitInline, withdrawal_limits_save
from registry.models import (
    AMOUNT,
    Account,
    AccountAccess,
    Asset,
    AuditRecord,
    Balance,
    JournalEntry,
    Posting,
    Transfer,
    WithdrawalLimit,
)
from registry.selectors import positions_as_at
from registry.services import (
    RegistryError,
    User,
    account_access_grant,
    account_open,
    audit_record,
)
from registry.statements import (
    account_statement,
    day_end,
    day_start,
    statement_csv,
    statement_filename,
    statement_html,
)
from registry.transfers import (
    TransferResult,
    cash_deposit,
    security_issue,
    security_transfer,
    withdrawal_request,
)
from registry.wire import balance_to_wire, holding_to_wire

FORM_TEMPLATE = "admin/xchange/form.html"


# Shared building blocks (also used by the exchange and oms consoles) -------------


class ReadOnlyAdminMixin:
    """For immutable records: staff may view them, never add, change or delete."""

    def has_add_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False


def _display(value: object) -> str | None:
    """A form value as audit text; a related row (initial pk or instance) as its pk."""
    if value is None:
        return None
    return str(value.pk if isinstance(value, Model) else value)


def form_changes(form: BaseForm, *, change: bool) -> dict[str, Any]:
    """What a model form changed: ``{field: [old, new]}`` (``{field: new}`` on add)."""
    changes: dict[str, Any] = {}
    for name in form.changed_data:
        new = _display(form.cleaned_data.get(name))
        changes[name] = [_display(form.initial.get(name)), new] if change else new
    return changes


class AuditedModelAdmin(admin.ModelAdmin):
    """Direct edits of configuration, each audited in the same transaction.

    For models whose changes need no workflow beyond the row itself (an asset's name,
    a holiday): the save or delete and its ``AuditRecord`` naming the staff user
    commit together.
    """

    # ``obj: Any``: each subclass's own model (this class is not generic at runtime).
    def save_model(
        self, request: HttpRequest, obj: Any, form: BaseForm, change: bool
    ) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if change and not form.has_changed():
                return
            audit_record(
                actor=request.user,
                action=f"{obj._meta.model_name}_{'change' if change else 'create'}",
                target=obj,
                changes=form_changes(form, change=change),
            )

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        with transaction.atomic():
            self._audit_delete(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            for obj in queryset:
                self._audit_delete(request, obj)
            super().delete_queryset(request, queryset)

    def _audit_delete(self, request: HttpRequest, obj: Model) -> None:
        audit_record(
            actor=request.user,
            action=f"{obj._meta.model_name}_delete",
            target=obj,
            changes={"deleted": str(obj)},
        )


def adopt_saved(obj: Model, saved: Model) -> None:
    """Make the admin form's instance the row a service saved.

    The admin carries on with its own instance after ``save_model`` (inlines, the
    change log, the redirect), so it takes the saved row's values and state.
    """
    for field in obj._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding, obj._state.db = False, saved._state.db


def search_term_id(search_term: str) -> int | None:
    """The search term as a row id, if it is one (digits within a bigint)."""
    term = search_term.strip()
    if term.isascii() and term.isdigit() and int(term) < 2**63:
        return int(term)
    return None


def object_missing_redirect(
    model_admin: "admin.ModelAdmin[Any]", request: HttpRequest, object_id: str
) -> HttpResponseRedirect:
    """The admin's own answer to an object that does not exist: a warning message
    and a redirect to the admin index, as Django's change view gives."""
    # A private ModelAdmin helper, not declared in django-stubs; Django's own
    # change and history views call it.
    redirect = model_admin._get_obj_does_not_exist_redirect  # type: ignore[attr-defined]
    return redirect(request, model_admin.opts, object_id)


def form_error_from(form: BaseForm, error: RegistryError) -> None:
    """Show a service error on the form: on its field if the form has one."""
    form.add_error(error.field if error.field in form.fields else None, error.message)


# Assets ---------------------------------------------------------------------


@admin.register(Asset)
class AssetAdmin(AuditedModelAdmin):
    list_display = ["code", "name", "kind", "scale"]
    list_filter = ["kind"]
    search_fields = ["code", "name"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Asset | None = None
    ) -> list[str]:
        # Amounts already stored are on the asset's grid: its identity and scale
        # are fixed once it exists.
        return ["code", "kind", "scale"] if obj is not None else []

    def has_delete_permission(
        self, request: HttpRequest, obj: Asset | None = None
    ) -> bool:
        return False


# Accounts and access ------------------------------------------------------------


def access_save(
    access: AccountAccess, *, acting_user: User, previous_user_id: int | None
) -> AccountAccess:
    """Grant the access an admin form describes; moving a row to another user
    revokes the first user's access."""
    with transaction.atomic():
        if previous_user_id is not None and previous_user_id != access.user_id:
            access_revoke(
                AccountAccess.objects.select_related("user", "account").get(
                    account_id=access.account_id, user_id=previous_user_id
                ),
                acting_user=acting_user,
            )
        return account_access_grant(
            account=access.account,
            user=access.user,
            role=access.role,
            acting_user=acting_user,
        )


def access_revoke(access: AccountAccess, *, acting_user: User) -> None:
    """Remove a user's access to an account, audited.

    The registry has no revoke service yet; this is its admin-side stand-in and
    writes the same shape of audit record as ``account_access_grant``.
    """
    with transaction.atomic():
        audit_record(
            actor=acting_user,
            action="account_access_revoke",
            target=access.account,
            changes={"user": access.user.get_username(), "role": access.role},
        )
        access.delete()


def _previous_user_id(access: AccountAccess) -> int | None:
    if access.pk is None:
        return None
    return (
        AccountAccess.objects.filter(pk=access.pk)
        .values_list("user_id", flat=True)
        .first()
    )


class AccountAccessInline(admin.TabularInline):
    model = AccountAccess
    fields = ["user", "role"]
    autocomplete_fields = ["user"]
    extra = 0


class BalanceInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Balance
    fields: ClassVar[tuple[str, ...]] = (
        "asset",
        "available",
        "held",
        "unsettled",
        "updated_at",
    )
    readonly_fields = fields
    can_delete = False
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[Balance]:
        return super().get_queryset(request).select_related("asset")


class MoneyForm(forms.Form):
    """A money view's form: an asset of one kind, an amount and a note.

    The hidden ``idempotency_key`` is drawn when the form is shown, so submitting
    the same page twice (a double click, a resent POST) records one transfer.
    """

    asset = forms.ModelChoiceField(queryset=Asset.objects.none())
    amount = forms.DecimalField(
        max_digits=AMOUNT["max_digits"],
        decimal_places=AMOUNT["decimal_places"],
        # A text box: a number input changes the amount on a stray scroll wheel.
        widget=forms.TextInput(attrs={"inputmode": "decimal"}),
    )
    reason = forms.CharField(max_length=200, required=False)
    idempotency_key = forms.CharField(
        max_length=64, required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args: Any, asset_kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        asset_field = cast(forms.ModelChoiceField, self.fields["asset"])
        asset_field.queryset = Asset.objects.filter(kind=asset_kind)
        self.initial.setdefault("idempotency_key", uuid.uuid4().hex)


class SecurityTransferForm(MoneyForm):
    """Move units to another client account, named by its number."""

    field_order = ["to_account", "asset", "amount", "reason"]

    to_account = forms.CharField(max_length=32, label="To account (number)")

    def clean_to_account(self) -> Account:
        number = self.cleaned_data["to_account"].strip()
        account = Account.objects.filter(number=number).first()
        if account is None:
            raise forms.ValidationError(f"There is no account {number}.")
        return account


def _deposit(request: HttpRequest, account: Account, form: MoneyForm) -> TransferResult:
    data = form.cleaned_data
    return cash_deposit(
        account=account,
        asset=data["asset"],
        amount=data["amount"],
        acting_user=request.user,
        reason=data["reason"],
        idempotency_key=data["idempotency_key"],
    )


def _issue(request: HttpRequest, account: Account, form: MoneyForm) -> TransferResult:
    data = form.cleaned_data
    return security_issue(
        account=account,
        asset=data["asset"],
        amount=data["amount"],
        acting_user=request.user,
        reason=data["reason"],
        idempotency_key=data["idempotency_key"],
    )


def _withdraw(
    request: HttpRequest, account: Account, form: MoneyForm
) -> TransferResult:
    data = form.cleaned_data
    return withdrawal_request(
        account=account,
        asset=data["asset"],
        amount=data["amount"],
        acting_user=request.user,
        idempotency_key=data["idempotency_key"],
        memo=data["reason"],
        on_behalf=True,
    )


def _move(request: HttpRequest, account: Account, form: MoneyForm) -> TransferResult:
    data = form.cleaned_data
    return security_transfer(
        from_account=account,
        to_account=data["to_account"],
        asset=data["asset"],
        amount=data["amount"],
        acting_user=request.user,
        reason=data["reason"],
        idempotency_key=data["idempotency_key"],
    )


def _posted(verb: str, preposition: str) -> Callable[[Transfer], str]:
    def message(transfer: Transfer) -> str:
        entry = transfer.journal_entries().first()
        to = f" to {transfer.counterparty.number}" if transfer.counterparty else ""
        amount = transfer.asset.quantize(transfer.amount)
        return (
            f"{verb} {amount} {transfer.asset.code} {preposition} "
            f"{transfer.account.number}{to} "
            f"(transfer #{transfer.pk}, journal entry #{entry.pk if entry else '-'})."
        )

    return message


def _requested(transfer: Transfer) -> str:
    amount = transfer.asset.quantize(transfer.amount)
    return (
        f"Requested a withdrawal of {amount} {transfer.asset.code} from "
        f"{transfer.account.number} (transfer #{transfer.pk}, held until approved); "
        "another staff user must approve it."
    )


class AsAtForm(forms.Form):
    as_at = forms.DateTimeField(
        label="As at",
        help_text="YYYY-MM-DD HH:MM[:SS], in UTC unless an offset is given "
        "(e.g. 2026-03-31 16:00+11:00).",
    )

    def clean_as_at(self) -> datetime:
        as_at: datetime = self.cleaned_data["as_at"]
        if as_at > timezone.now():
            raise forms.ValidationError("That is in the future.")
        return as_at


class StatementForm(forms.Form):
    start = forms.DateField(label="From", help_text="YYYY-MM-DD (UTC days)")
    end = forms.DateField(label="To", help_text="YYYY-MM-DD, included")
    output = forms.ChoiceField(
        label="Format",
        choices=[("html", "Printable page"), ("csv", "CSV download")],
        initial="html",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and start > end:
            self.add_error("end", "The period ends before it starts.")
        if start and day_start(start) > timezone.now():
            self.add_error("start", "That is in the future.")
        return cleaned


@dataclass(frozen=True, slots=True)
class MoneyView:
    """One of the account page's money views: a form and the service it calls."""

    title: str
    asset_kind: str
    perform: Callable[[HttpRequest, Account, MoneyForm], TransferResult]
    done: Callable[[Transfer], str]
    form_class: type[MoneyForm] = MoneyForm


MONEY_VIEWS = {
    "deposit": MoneyView(
        "Deposit cash", Asset.Kind.CURRENCY, _deposit, _posted("Deposited", "to")
    ),
    "issue": MoneyView(
        "Issue holdings", Asset.Kind.SECURITY, _issue, _posted("Issued", "to")
    ),
    "withdraw": MoneyView(
        "Request withdrawal", Asset.Kind.CURRENCY, _withdraw, _requested
    ),
    "transfer": MoneyView(
        "Transfer holdings",
        Asset.Kind.SECURITY,
        _move,
        _posted("Transferred", "from"),
        SecurityTransferForm,
    ),
}


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "name",
        "kind",
        "status",
        "currency",
        "fee_group",
        "created_at",
    ]
    list_filter = ["kind", "status", "fee_group", "trade_unsettled_proceeds"]
    list_select_related = ["currency", "fee_group"]
    search_fields = ["number", "name"]
    autocomplete_fields = ["currency", "fee_group"]
    change_form_template = "admin/xchange/account_change_form.html"

    def get_inlines(self, request: HttpRequest, obj: Account | None) -> list[Any]:
        if obj is None:
            return [AccountAccessInline]
        return [AccountAccessInline, WithdrawalLimitInline, BalanceInline]

    def get_fields(
        self, request: HttpRequest, obj: Account | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ("number", "name", "currency")
        return (
            "number",
            "name",
            "kind",
            "status",
            "currency",
            "fee_group",
            "trade_unsettled_proceeds",
            "created_at",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: Account | None = None
    ) -> list[str]:
        return ["number", "kind", "currency", "created_at"] if obj is not None else []

    def has_delete_permission(
        self, request: HttpRequest, obj: Account | None = None
    ) -> bool:
        # Accounts carry ledger history: they are closed, never deleted.
        return False

    def save_model(
        self, request: HttpRequest, obj: Account, form: BaseForm, change: bool
    ) -> None:
        if change:
            with transaction.atomic():
                obj.save()
                if not form.has_changed():
                    return
                audit_record(
                    actor=request.user,
                    action="account_change",
                    target=obj,
                    changes=form_changes(form, change=True),
                )
            return
        account = account_open(
            number=obj.number,
            name=obj.name,
            currency=obj.currency,
            acting_user=request.user,
        )
        adopt_saved(obj, account)

    def save_formset(
        self, request: HttpRequest, form: BaseForm, formset: Any, change: bool
    ) -> None:
        if formset.model is WithdrawalLimit:
            withdrawal_limits_save(formset, request.user)
            return
        if formset.model is not AccountAccess:
            super().save_formset(request, form, formset, change)
            return
        formset.save(commit=False)
        for access in formset.deleted_objects:
            access_revoke(access, acting_user=request.user)
        for access, _ in formset.changed_objects:
            access_save(
                access,
                acting_user=request.user,
                previous_user_id=_previous_user_id(access),
            )
        for access in formset.new_objects:
            saved = access_save(access, acting_user=request.user, previous_user_id=None)
            adopt_saved(access, saved)

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        name = f"{opts.app_label}_{opts.model_name}"
        return [
            *(
                path(
                    f"<path:object_id>/{kind}/",
                    self.admin_site.admin_view(self.money_view),
                    {"kind": kind},
                    name=f"{name}_{kind}",
                )
                for kind in MONEY_VIEWS
            ),
            path(
                "<path:object_id>/as-at/",
                self.admin_site.admin_view(self.as_at_view),
                name=f"{name}_as_at",
            ),
            path(
                "<path:object_id>/statement/",
                self.admin_site.admin_view(self.statement_view),
                name=f"{name}_statement",
            ),
            *super().get_urls(),
        ]

    def _viewable(self, request: HttpRequest, object_id: str) -> Account | None:
        account = self.get_object(request, unquote(object_id))
        if account is not None and not self.has_view_permission(request, account):
            raise PermissionDenied
        return account

    def as_at_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The account's balances and holdings as at a past instant, derived from
        its postings (``registry.selectors.positions_as_at``). Read-only."""
        account = self._viewable(request, object_id)
        if account is None:
            return object_missing_redirect(self, request, object_id)
        form = AsAtForm(request.GET if "as_at" in request.GET else None)
        positions: list[Balance] | None = None
        if form.is_valid():
            positions = positions_as_at(
                account=account, as_at=form.cleaned_data["as_at"]
            )
        context = {
            **self._page_context(request, account, form),
            "title": f"Balances and holdings as at: {account.number}",
            "submit_label": "Show",
            "as_at": form.cleaned_data["as_at"] if positions is not None else None,
            "cash": [
                balance_to_wire(p)
                for p in positions or []
                if p.asset.kind == Asset.Kind.CURRENCY
            ],
            "holdings": [
                holding_to_wire(p)
                for p in positions or []
                if p.asset.kind == Asset.Kind.SECURITY and (p.total or p.cost)
            ],
        }
        return TemplateResponse(request, "admin/xchange/account_as_at.html", context)

    def statement_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The account's statement for a period of days, as a printable page or a
        CSV download (``registry.statements``). Read-only."""
        account = self._viewable(request, object_id)
        if account is None:
            return object_missing_redirect(self, request, object_id)
        form = StatementForm(request.GET if "start" in request.GET else None)
        if form.is_valid():
            statement = account_statement(
                account=account,
                start=day_start(form.cleaned_data["start"]),
                end=min(day_end(form.cleaned_data["end"]), timezone.now()),
            )
            if form.cleaned_data["output"] == "csv":
                response = HttpResponse(
                    statement_csv(statement), content_type="text/csv; charset=utf-8"
                )
                name = statement_filename(statement, "csv")
                response["Content-Disposition"] = f'attachment; filename="{name}"'
                return response
            return HttpResponse(statement_html(statement))
        context = {
            **self._page_context(request, account, form),
            "title": f"Statement: {account.number}",
            "submit_label": "Produce the statement",
        }
        return TemplateResponse(request, "admin/xchange/account_as_at.html", context)

    def _page_context(
        self, request: HttpRequest, account: Account, form: BaseForm
    ) -> dict[str, Any]:
        opts = self.opts
        return {
            **self.admin_site.each_context(request),
            "opts": opts,
            "original": account,
            "cancel_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[account.pk]
            ),
            "form": form,
            "media": self.media + form.media,
            "method": "get",
        }

    def money_view(
        self, request: HttpRequest, object_id: str, kind: str
    ) -> HttpResponse:
        """Deposit cash into, issue holdings to, request a withdrawal from, or
        transfer holdings out of a client account.

        Calls ``cash_deposit``, ``security_issue``, ``withdrawal_request`` (on the
        client's behalf: another staff user must approve it) or
        ``security_transfer`` with the staff user as the acting user; a
        ``RegistryError`` re-renders the form with the error on the field it names,
        and nothing is posted. Submitting the same form twice records one transfer.
        """
        account = self.get_object(request, unquote(object_id))
        if account is None:
            return object_missing_redirect(self, request, object_id)
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        view = MONEY_VIEWS[kind]
        form = view.form_class(
            request.POST if request.method == "POST" else None,
            asset_kind=view.asset_kind,
        )
        opts = self.opts
        change_url = reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change", args=[account.pk]
        )
        if form.is_valid():
            try:
                result = view.perform(request, account, form)
            except RegistryError as error:
                form_error_from(form, error)
            else:
                self._report(request, view, result)
                return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "original": account,
            "cancel_url": change_url,
            "title": f"{view.title}: {account.number}",
            "form": form,
            "media": self.media + form.media,
            "submit_label": view.title,
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)

    def _report(
        self, request: HttpRequest, view: MoneyView, result: TransferResult
    ) -> None:
        transfer = Transfer.objects.select_related(
            "account", "counterparty", "asset"
        ).get(pk=result.transfer.pk)
        if result.created:
            self.message_user(request, view.done(transfer), messages.SUCCESS)
            return
        self.message_user(
            request,
            f"This form was already submitted: transfer #{transfer.pk} "
            f"({transfer.get_status_display()}). Nothing more was done.",
            messages.WARNING,
        )


@admin.register(AccountAccess)
class AccountAccessAdmin(admin.ModelAdmin):
    list_display = ["account", "user", "role"]
    list_filter = ["role"]
    list_select_related = ["account", "user"]
    search_fields = ["account__number", "account__name", "user__username"]
    autocomplete_fields = ["account", "user"]

    def save_model(
        self, request: HttpRequest, obj: AccountAccess, form: BaseForm, change: bool
    ) -> None:
        saved = access_save(
            obj,
            acting_user=request.user,
            previous_user_id=_previous_user_id(obj) if change else None,
        )
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: AccountAccess) -> None:
        access_revoke(obj, acting_user=request.user)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[AccountAccess]
    ) -> None:
        with transaction.atomic():
            for access in queryset.select_related("account", "user"):
                access_revoke(access, acting_user=request.user)


# The ledger (read-only) ---------------------------------------------------------


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["account", "asset", "available", "held", "unsettled", "total"]
    list_filter = ["asset__kind"]
    list_select_related = ["account", "asset"]
    search_fields = ["account__number", "account__name", "asset__code"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Balance]:
        return (
            super()
            .get_queryset(request)
            .annotate(total_amount=F("available") + F("held") + F("unsettled"))
        )

    @admin.display(ordering="total_amount", description="total")
    def total(self, balance: Balance) -> Decimal:
        return balance.total


class PostingInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Posting
    fields: ClassVar[tuple[str, ...]] = ("account", "asset", "bucket", "amount")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[Posting]:
        return super().get_queryset(request).select_related("account", "asset")


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "kind", "created_at", "reference", "reason", "acting_user"]
    list_filter = ["kind"]
    list_select_related = ["acting_user"]
    search_fields = ["reference__exact", "reason"]
    inlines = [PostingInline]
    show_full_result_count = False


@admin.register(Posting)
class PostingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "entry", "account", "asset", "bucket", "amount"]
    list_filter = ["bucket", "asset__kind"]
    list_select_related = ["entry", "account", "asset"]
    search_fields = ["account__number", "asset__code", "entry__reference__exact"]
    show_full_result_count = False


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "actor",
        "action",
        "object_type",
        "object_id",
        "reason",
    ]
    list_filter = ["action", "object_type"]
    list_select_related = ["actor"]
    search_fields = ["object_id__exact", "action", "reason", "actor__username"]
    show_full_result_count = False


# Transfers register their own admin (it builds on the blocks above).
from registry import admin_transfers  # noqa: E402, F401
