"""Scans in the admin: staff keep the system scans; users' scans are read-only.

Criteria and ordering are checked by the criteria parser (a form error names the
position at fault). Saves and deletes go through the scan services with the staff
user, so they are audited and a change of matches is published to subscribers.
"""

from typing import Any, TypedDict

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest

from marketdata.models import Scan
from marketdata.scan_criteria import CriteriaError, criteria_parse, ordering_parse
from marketdata.scans import MAX_LIMIT, scan_create, scan_delete, scan_update
from registry.admin import adopt_saved


class _ScanValues(TypedDict):
    name: str
    criteria: str
    order_by: str
    limit: int | None


class ScanForm(forms.ModelForm):
    class Meta:
        model = Scan
        fields = ["name", "criteria", "order_by", "limit"]
        widgets = {"criteria": forms.Textarea(attrs={"rows": 3, "cols": 80})}
        help_texts = {
            "criteria": "e.g. change_percent > 5 and volume > 1000",
            "order_by": "A ranked scan: an L1 field, '-' first for descending "
            "(e.g. -change_percent).",
            "limit": f"With order_by: keep the best 1 to {MAX_LIMIT} symbols.",
        }

    def clean_criteria(self) -> str:
        criteria: str = self.cleaned_data["criteria"]
        try:
            criteria_parse(criteria)
        except CriteriaError as error:
            raise forms.ValidationError(
                error.message, code="invalid_criteria"
            ) from error
        return criteria

    def clean_order_by(self) -> str:
        order_by: str = self.cleaned_data["order_by"]
        if order_by:
            try:
                ordering_parse(order_by)
            except CriteriaError as error:
                raise forms.ValidationError(
                    error.message, code="invalid_order_by"
                ) from error
        return order_by

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        limit = cleaned.get("limit")
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            self.add_error("limit", f"A limit is from 1 to {MAX_LIMIT}.")
        elif (
            limit is not None
            and not cleaned.get("order_by")
            and not (self.has_error("order_by"))
        ):
            self.add_error("limit", "A limit needs an order_by.")
        return cleaned


class ScanKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("system", "System"), ("user", "User")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Scan]
    ) -> QuerySet[Scan]:
        if self.value() == "system":
            return queryset.filter(owner__isnull=True)
        if self.value() == "user":
            return queryset.filter(owner__isnull=False)
        return queryset


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    form = ScanForm
    list_display = [
        "name",
        "criteria",
        "owner",
        "is_system",
        "order_by",
        "limit",
        "match_count",
        "created_at",
    ]
    list_filter = [ScanKindFilter]
    list_select_related = ["owner"]
    search_fields = ["name", "criteria", "owner__username"]
    readonly_fields = ["owner", "match_list", "created_at"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Scan]:
        return super().get_queryset(request).annotate(match_count=Count("matches"))

    @admin.display(boolean=True, description="system")
    def is_system(self, scan: Scan) -> bool:
        return scan.owner_id is None

    @admin.display(description="matches", ordering="match_count")
    def match_count(self, scan: Scan) -> int:
        return scan.match_count  # type: ignore[attr-defined]

    @admin.display(description="matches")
    def match_list(self, scan: Scan) -> str:
        symbols = scan.matches.select_related("market")
        return ", ".join(sorted(symbol.identifier for symbol in symbols)) or "-"

    # Users' scans are theirs: staff read them but change only the system scans.
    def has_change_permission(
        self, request: HttpRequest, obj: Scan | None = None
    ) -> bool:
        if obj is not None and obj.owner_id is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: Scan | None = None
    ) -> bool:
        if obj is not None and obj.owner_id is not None:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # The bulk delete would reach users' scans too; delete one system scan at
        # a time from its page.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(
        self, request: HttpRequest, obj: Scan, form: BaseForm, change: bool
    ) -> None:
        values = _ScanValues(
            name=obj.name, criteria=obj.criteria, order_by=obj.order_by, limit=obj.limit
        )
        if change:
            saved = scan_update(scan=obj, **values, acting_user=request.user)
        else:
            saved = scan_create(owner=None, **values, acting_user=request.user)
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Scan) -> None:
        scan_delete(scan=obj, acting_user=request.user)
