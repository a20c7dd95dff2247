"""The staff console for news.

Adding an item publishes it through ``news_publish`` with the staff user as the
publisher; editing one corrects it through ``news_update`` (audited, and sent on the
``news`` stream again under the same id). Items are not deleted: a retraction is a
correction.
"""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest

from marketdata.models import NewsItem
from marketdata.news import NEWS_FIELDS, news_publish, news_update
from registry.admin import adopt_saved


@admin.register(NewsItem)
class NewsItemAdmin(admin.ModelAdmin):
    list_display = [
        "headline",
        "source",
        "priority",
        "is_price_sensitive",
        "published_at",
        "published_by",
    ]
    list_filter = ["priority", "is_price_sensitive", "source", "symbols__market"]
    list_select_related = ["published_by"]
    search_fields = ["headline", "source", "body", "symbols__code"]
    date_hierarchy = "published_at"
    autocomplete_fields = ["symbols"]
    fields = [
        "source",
        "headline",
        "body",
        "priority",
        "is_price_sensitive",
        "symbols",
        "published_at",
        "published_by",
    ]
    readonly_fields = ["published_at", "published_by"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[NewsItem], search_term: str
    ) -> tuple[QuerySet[NewsItem], bool]:
        # Searching across symbols joins a many-to-many: rows may repeat.
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset, True

    def has_delete_permission(
        self, request: HttpRequest, obj: NewsItem | None = None
    ) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: NewsItem, form: BaseForm, change: bool
    ) -> None:
        data = form.cleaned_data
        values: dict[str, Any] = {name: data[name] for name in NEWS_FIELDS}
        if change:
            saved = news_update(
                item=obj, symbols=data["symbols"], acting_user=request.user, **values
            )
        else:
            saved = news_publish(
                **values, symbols=data["symbols"], acting_user=request.user
            )
        adopt_saved(obj, saved)

    def save_related(
        self, request: HttpRequest, form: BaseForm, formsets: Any, change: bool
    ) -> None:
        """The services set the symbols; the form's own many-to-many save would
        write them again outside the audit."""
