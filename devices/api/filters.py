from __future__ import annotations

from django import forms
from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters

from devices.models import Device, DeviceStatus
from onboard_cli import text_rules

# A hundred years: beyond any certificate, and far inside what date arithmetic can hold.
MAX_EXPIRY_DAYS = 36500
# Names and hardware ids are at most this long (the one-line rule): a longer search cannot match.
MAX_SEARCH_LENGTH = text_rules.MAX_LENGTH


class WholeNumberFilter(filters.NumberFilter):  # type: ignore[misc]  # django-filter is untyped
    field_class = forms.IntegerField


class PresentMeansGivenForm(forms.Form):
    """A parameter that is present but empty (`?status=`) is an error, not "no filter"."""

    may_be_empty = frozenset({"search"})

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        for name in self.fields:
            if name not in self.may_be_empty and name in self.data and self.data.get(name) == "":
                self.add_error(name, "Give a value, or leave the parameter out.")
        return cleaned


class DeviceFilter(filters.FilterSet):  # type: ignore[misc]
    status = filters.ChoiceFilter(choices=DeviceStatus.choices)
    expiring_within_days = WholeNumberFilter(
        method="filter_expiring",
        min_value=0,
        max_value=MAX_EXPIRY_DAYS,
        label="certificate expires within N days",
    )
    search = filters.CharFilter(
        method="filter_search", label="name or hardware id contains", max_length=MAX_SEARCH_LENGTH
    )

    class Meta:
        model = Device
        fields = ["status"]
        form = PresentMeansGivenForm

    def filter_expiring(self, queryset: QuerySet[Device], name: str, value: float) -> QuerySet[Device]:
        return queryset.expiring(int(value))  # type: ignore[attr-defined,no-any-return]

    def filter_search(self, queryset: QuerySet[Device], name: str, value: str) -> QuerySet[Device]:
        return queryset.filter(Q(name__icontains=value) | Q(hardware_id__icontains=value))
