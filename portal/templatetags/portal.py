from __future__ import annotations

import re
from typing import Any

from django import template
from django.template.defaultfilters import date as format_date
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from portal.access import is_verified, may_use_portal

register = template.Library()


@register.filter
def portal_user(user: Any) -> bool:
    """Signed in with the second factor, in a role that works in the portal. Pages rendered
    outside a request (the download refusal) have no user: False."""
    if not getattr(user, "is_authenticated", False):
        return False
    return is_verified(user) and may_use_portal(user)


@register.filter
def get_item(mapping: dict[str, Any], key: str) -> Any:
    return mapping.get(key)


# Hexadecimal runs this long are ids (serials, digests); words are left whole.
_LONG_RUN = re.compile(r"[0-9A-Fa-f]{16,}")
_GROUP = 8


@register.filter(needs_autoescape=True)
def breakable(value: Any, autoescape: bool = True) -> SafeString:
    """The text, escaped, with line-break opportunities (<wbr>) only where an id may break:
    after each colon (fingerprints, IPv6 addresses), after each hyphen (UUIDs, hardware ids) and
    between groups of eight digits in a long hexadecimal run (serials). Nothing else breaks, so
    words never do."""
    text = str(conditional_escape(value) if autoescape else value)
    text = _LONG_RUN.sub(
        lambda run: "<wbr>".join(run[0][start : start + _GROUP] for start in range(0, len(run[0]), _GROUP)),
        text,
    )
    text = text.replace(":", ":<wbr>").replace("-", "-<wbr>")
    return mark_safe(text)  # noqa: S308 (escaped above; only <wbr> added)


@register.filter(expects_localtime=True)
def when(value: Any, format_string: str = "Y-m-d H:i") -> str:
    """A date as `date` formats it, in a <time> element whose parts (day, time of day) the
    stylesheet keeps whole: a line may break between them, never in "2026-11-/29". Empty for
    no date, so `|default:"—"` still applies."""
    if not value:
        return ""
    parts = format_html_join(
        " ", "<span>{}</span>", ((part,) for part in format_date(value, format_string).split())
    )
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), parts)
