"""One-time form tokens: a form that creates credentials is handled once, however often it is sent.

A double click or a resent POST would otherwise register a second device or rotate a key
twice. Each form carries a token issued with it; the first POST that presents it uses it up.
"""

from __future__ import annotations

import secrets

from django.http import HttpRequest

SESSION_KEY = "portal_submissions"
MAX_OPEN = 20


def issue(request: HttpRequest) -> str:
    token = secrets.token_urlsafe(16)
    open_tokens: list[str] = list(request.session.get(SESSION_KEY, []))[-(MAX_OPEN - 1) :]
    request.session[SESSION_KEY] = [*open_tokens, token]
    return token


def consume(request: HttpRequest, token: str) -> bool:
    open_tokens: list[str] = list(request.session.get(SESSION_KEY, []))
    if not token or token not in open_tokens:
        return False
    open_tokens.remove(token)
    request.session[SESSION_KEY] = open_tokens
    request.session.save()
    return True
