"""The staff console for transfers: the record, and approving or rejecting withdrawals.

Transfers are read-only records here. Pending withdrawals are decided through the
services: ``withdrawal_approve`` (maker-checker: a staff user other than the
requester) and ``withdrawal_reject`` (with a reason), from the "Approve" / "Reject"
links of a transfer's page (a form with the reason; a refusal such as the
maker-checker rule is shown as the form's error) or from the changelist actions
(a reason page, then one message per transfer). New transfers are made from the
account page (deposit, issue, request withdrawal, transfer holdings).
"""

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from registry.admin import (
    FORM_TEMPLATE,
    ReadOnlyAdminMixin,
    form_error_from,
    object_missing_redirect,
    search_term_id,
)
from registry.models import Transfer
from registry.services import RegistryError
from registry.transfers import withdrawal_approve, withdrawal_reject

ACTION_TEMPLATE = "admin/xchange/transfer_action_confirmation.html"


class ApproveForm(forms.Form):
    reason = forms.CharField(
        max_length=200, required=False, help_text="Recorded with the approval."
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=200, help_text="Recorded, and shown to the client."
    )


#: decision -> (form, service, title, past tense)
DECISIONS: dict[str, tuple[type[forms.Form], Any, str, str]] = {
    "approve": (ApproveForm, withdrawal_approve, "Approve withdrawal", "Approved"),
    "reject": (RejectForm, withdrawal_reject, "Reject withdrawal", "Rejected"),
}


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "account",
        "counterparty",
        "asset",
        "amount",
        "requested_by",
        "decided_by",
        "created_at",
    ]
    list_filter = ["kind", "status", "asset"]
    list_select_related = [
        "account",
        "counterparty",
        "asset",
        "requested_by",
        "decided_by",
    ]
    search_fields = [
        "account__number",
        "counterparty__number",
        "idempotency_key__exact",
        "memo",
    ]
    search_help_text = "A transfer id, an account number, an idempotency key or memo."
    fields: ClassVar[tuple[str, ...]] = (
        "kind",
        "status",
        "account",
        "counterparty",
        "asset",
        "amount",
        "memo",
        "idempotency_key",
        "requested_by",
        "created_at",
        "decided_by",
        "decided_at",
        "decision_reason",
        "entries",
    )
    readonly_fields = fields
    actions = ["approve_withdrawals", "reject_withdrawals"]
    change_form_template = "admin/xchange/transfer_change_form.html"
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Transfer]:
        return (
            super()
            .get_queryset(request)
            .select_related(
                "account", "counterparty", "asset", "requested_by", "decided_by"
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Transfer], search_term: str
    ) -> tuple[QuerySet[Transfer], bool]:
        transfer_id = search_term_id(search_term)
        if transfer_id is not None:
            return queryset.filter(pk=transfer_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="journal entries")
    def entries(self, transfer: Transfer) -> str:
        return format_html_join(
            ", ",
            '<a href="{}">#{} {}</a>',
            (
                (
                    reverse("admin:registry_journalentry_change", args=[entry.pk]),
                    entry.pk,
                    entry.kind,
                )
                for entry in transfer.journal_entries()
            ),
        ) or format_html("{}", "-")

    def has_decide_permission(self, request: HttpRequest) -> bool:
        """Staff with the transfer change permission decide withdrawals (transfers
        are never edited); the service also enforces maker-checker."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    # Per transfer: a form with the reason ------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        return [
            path(
                f"<path:object_id>/{decision}/",
                self.admin_site.admin_view(self.decision_view),
                {"decision": decision},
                name=f"{opts.app_label}_{opts.model_name}_{decision}",
            )
            for decision in DECISIONS
        ] + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "has_decide_permission": self.has_decide_permission(request),
        }
        return super().change_view(request, object_id, form_url, context)

    def decision_view(
        self, request: HttpRequest, object_id: str, decision: str
    ) -> HttpResponse:
        """Approve or reject one withdrawal with a reason.

        A ``RegistryError`` (``maker_checker_violation``, ``transfer_not_pending``,
        ...) re-renders the form with the error and changes nothing.
        """
        transfer = self.get_object(request, unquote(object_id))
        if transfer is None:
            return object_missing_redirect(self, request, object_id)
        if not self.has_decide_permission(request):
            raise PermissionDenied
        form_class, service, title, done = DECISIONS[decision]
        form = form_class(request.POST if request.method == "POST" else None)
        change_url = reverse("admin:registry_transfer_change", args=[transfer.pk])
        if form.is_valid():
            try:
                service(
                    transfer_id=transfer.pk,
                    acting_user=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except RegistryError as error:
                form_error_from(form, error)
            else:
                self.message_user(
                    request,
                    f"{done} withdrawal #{transfer.pk} of "
                    f"{transfer.asset.quantize(transfer.amount)} "
                    f"{transfer.asset.code} from {transfer.account.number}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": transfer,
            "cancel_url": change_url,
            "title": f"{title} #{transfer.pk}",
            "form": form,
            "media": self.media + form.media,
            "submit_label": title,
        }
        return TemplateResponse(request, FORM_TEMPLATE, context)

    # Changelist actions: a reason page, then one message per transfer --------------

    @admin.action(description="Approve selected withdrawals", permissions=["decide"])
    def approve_withdrawals(
        self, request: HttpRequest, queryset: QuerySet[Transfer]
    ) -> HttpResponse | None:
        return self._decide_selected(request, queryset, "approve")

    @admin.action(description="Reject selected withdrawals", permissions=["decide"])
    def reject_withdrawals(
        self, request: HttpRequest, queryset: QuerySet[Transfer]
    ) -> HttpResponse | None:
        return self._decide_selected(request, queryset, "reject")

    def _decide_selected(
        self, request: HttpRequest, queryset: QuerySet[Transfer], decision: str
    ) -> HttpResponse | None:
        form_class, service, title, done = DECISIONS[decision]
        form = form_class(request.POST if "confirm" in request.POST else None)
        if not form.is_valid():
            return self._reason_page(request, queryset, decision, form, title)
        decided: list[str] = []
        for transfer in queryset.order_by("pk"):
            try:
                service(
                    transfer_id=transfer.pk,
                    acting_user=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except RegistryError as error:
                self.message_user(
                    request, f"#{transfer.pk}: {error.message}", messages.ERROR
                )
            else:
                decided.append(f"#{transfer.pk}")
        if decided:
            self.message_user(
                request,
                f"{done} withdrawals {', '.join(decided)}.",
                messages.SUCCESS,
            )
        return None

    def _reason_page(
        self,
        request: HttpRequest,
        queryset: QuerySet[Transfer],
        decision: str,
        form: forms.Form,
        title: str,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{title}s",
            "form": form,
            "queryset": queryset.order_by("pk"),
            "action": f"{decision}_withdrawals",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "submit_label": title.split()[0],
            "cancel_url": reverse("admin:registry_transfer_changelist"),
            "media": self.media,
        }
        return TemplateResponse(request, ACTION_TEMPLATE, context)
