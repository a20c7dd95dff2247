"""The staff console for watchlists.

Staff keep the system lists here (a list added in the admin is a system list) and
may correct a client's list. The ordered symbols are edited as text, one
``MARKET:CODE`` per line. Every save and delete goes through the watchlist services
(audited, published on the list's stream) with the staff user as the acting user.
"""

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest

from exchange.models import Symbol
from marketdata.models import Watchlist
from marketdata.news import MAX_SYMBOLS, UnknownSymbolError, symbols_resolve
from marketdata.watchlists import (
    watchlist_create,
    watchlist_delete,
    watchlist_symbols,
    watchlist_update,
)
from registry.admin import adopt_saved


class WatchlistForm(forms.ModelForm):
    symbols = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "cols": 30}),
        help_text="One MARKET:CODE per line, in the order shown to clients.",
    )

    class Meta:
        model = Watchlist
        fields = ["name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["symbols"] = "\n".join(
                symbol.identifier for symbol in watchlist_symbols(self.instance)
            )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        taken = Watchlist.objects.filter(owner_id=self.instance.owner_id, name=name)
        if taken.exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(
                "There is already a watchlist of this name.", code="duplicate_name"
            )
        return name

    def clean_symbols(self) -> list[Symbol]:
        identifiers = re.split(r"[\s,]+", self.cleaned_data["symbols"].strip())
        identifiers = [identifier for identifier in identifiers if identifier]
        if len(identifiers) > MAX_SYMBOLS:
            raise forms.ValidationError(f"At most {MAX_SYMBOLS} symbols.")
        if duplicates := sorted({i for i in identifiers if identifiers.count(i) > 1}):
            raise forms.ValidationError(
                f"Listed more than once: {', '.join(duplicates)}.",
                code="duplicate_symbol",
            )
        try:
            return symbols_resolve(identifiers)
        except UnknownSymbolError as error:
            raise forms.ValidationError(error.message, code=error.code) from error


class SystemListFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("system", "System"), ("personal", "Personal")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Watchlist]
    ) -> QuerySet[Watchlist]:
        if self.value() is None:
            return queryset
        return queryset.filter(owner__isnull=self.value() == "system")


@admin.register(Watchlist)
class WatchlistAdmin(admin.ModelAdmin):
    form = WatchlistForm
    list_display = ["name", "owner_display", "symbol_count", "updated_at"]
    list_filter = [SystemListFilter]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__username"]
    readonly_fields = ["owner", "created_at", "updated_at"]

    def get_fields(
        self, request: HttpRequest, obj: Watchlist | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ("name", "symbols")
        return ("name", "owner", "symbols", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Watchlist]:
        return super().get_queryset(request).annotate(symbol_count=Count("members"))

    @admin.display(description="owner", ordering="owner__username")
    def owner_display(self, watchlist: Watchlist) -> str:
        return "(system)" if watchlist.owner is None else watchlist.owner.get_username()

    @admin.display(description="symbols", ordering="symbol_count")
    def symbol_count(self, watchlist: Watchlist) -> int:
        return watchlist.symbol_count  # type: ignore[attr-defined]

    def save_model(
        self, request: HttpRequest, obj: Watchlist, form: BaseForm, change: bool
    ) -> None:
        name, symbols = form.cleaned_data["name"], form.cleaned_data["symbols"]
        if change:
            saved = watchlist_update(
                watchlist=obj, name=name, symbols=symbols, acting_user=request.user
            )
        else:
            saved = watchlist_create(
                owner=None, name=name, symbols=symbols, acting_user=request.user
            )
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Watchlist) -> None:
        watchlist_delete(watchlist=obj, acting_user=request.user)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[Watchlist]
    ) -> None:
        for watchlist in queryset.order_by("pk"):
            watchlist_delete(watchlist=watchlist, acting_user=request.user)
