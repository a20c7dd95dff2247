"""The account page's daily withdrawal limits: one inline row per currency.

Rows are written through ``registry.limits.withdrawal_limit_set`` (audited), never
by the formset itself.
"""

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import ForeignKey
from django.http import HttpRequest

from registry.limits import withdrawal_limit_check, withdrawal_limit_set
from registry.models import Asset, WithdrawalLimit
from registry.services import RegistryError


class WithdrawalLimitForm(forms.ModelForm):
    class Meta:
        model = WithdrawalLimit
        fields = ["asset", "daily_limit"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        asset, daily_limit = data.get("asset"), data.get("daily_limit")
        if asset is not None and daily_limit is not None:
            try:
                withdrawal_limit_check(asset, daily_limit)
            except RegistryError as error:
                self.add_error(
                    "asset" if error.field == "asset" else "daily_limit",
                    error.message,
                )
        return data


class WithdrawalLimitInline(admin.TabularInline):
    model = WithdrawalLimit
    form = WithdrawalLimitForm
    fields = ["asset", "daily_limit"]
    extra = 0
    verbose_name = "daily withdrawal limit"

    def formfield_for_foreignkey(
        self, db_field: ForeignKey, request: HttpRequest, **kwargs: Any
    ) -> Any:
        if db_field.name == "asset":
            kwargs["queryset"] = Asset.objects.filter(kind=Asset.Kind.CURRENCY)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def withdrawal_limits_save(formset: Any, acting_user: Any) -> None:
    """Apply the inline's changes through the service (one audit record each)."""
    formset.save(commit=False)
    account = formset.instance
    for limit in formset.deleted_objects:
        withdrawal_limit_set(
            account=account,
            asset=limit.asset,
            daily_limit=None,
            acting_user=acting_user,
        )
    for limit in [
        *(limit for limit, _ in formset.changed_objects),
        *formset.new_objects,
    ]:
        withdrawal_limit_set(
            account=account,
            asset=limit.asset,
            daily_limit=limit.daily_limit,
            acting_user=acting_user,
        )
