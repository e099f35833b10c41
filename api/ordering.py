"""`ordering` that names one sortable field, or is refused."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.filters import OrderingFilter
from rest_framework.request import Request


class StrictOrderingFilter(OrderingFilter):
    """`ordering` names one sortable field; an unknown one is an error, not silently ignored."""

    def get_ordering(self, request: Request, queryset: Any, view: Any) -> Any:
        values = request.query_params.getlist(self.ordering_param)
        if values:
            allowed = set(view.ordering_fields)
            if len(values) > 1 or values[0].lstrip("-") not in allowed:
                choices = ", ".join(sorted(allowed))
                raise exceptions.ValidationError(
                    {self.ordering_param: [f"Order by one of: {choices} (prefix - to reverse)."]}
                )
        return super().get_ordering(request, queryset, view)
