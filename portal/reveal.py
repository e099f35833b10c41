"""Showing one-time credentials (bundle password and download link) exactly once.

After a registration, re-issue or new link, the view seals the credentials and redirects
to a reveal page (POST, redirect, GET: a reload never repeats the registration). The
ciphertext waits in the session; the key goes to the browser in an HttpOnly cookie scoped to
that one reveal URL. The first GET opens and deletes both and answers with
`Cache-Control: no-store`; a reload finds nothing and says so. The password is never stored
readable: the database holds, for at most a few seconds, ciphertext without its key.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from portal import sealed

SESSION_KEY = "portal_reveals"
COOKIE_PREFIX = "reveal_"
COOKIE_SECONDS = 10 * 60
# Unclaimed reveals (a closed tab) are dropped beyond this many per session.
MAX_PENDING = 10


@dataclass(frozen=True)
class Credential:
    device_id: str
    device_name: str
    device_status: str
    download_url: str
    password: str
    expires_at: str
    note: str = ""
    # EST delivery: the one-time enrolment code instead of a link and a password.
    enrollment_code: str = ""


def _bound(reveal_id: str) -> str:
    return f"portal-reveal:{reveal_id}"


def _url(reveal_id: str) -> str:
    return reverse("portal:reveal", args=[reveal_id])


def redirect_to_reveal(request: HttpRequest, credentials: list[Credential], title: str) -> HttpResponse:
    """Seal the credentials for this session and send the browser to see them, once."""
    reveal_id = secrets.token_urlsafe(16)
    key = sealed.new_key()
    plain = json.dumps({"title": title, "credentials": [asdict(item) for item in credentials]}).encode()
    pending: dict[str, str] = dict(request.session.get(SESSION_KEY, {}))
    while len(pending) >= MAX_PENDING:
        pending.pop(next(iter(pending)))
    pending[reveal_id] = base64.b64encode(sealed.encrypt(key, plain, _bound(reveal_id))).decode()
    request.session[SESSION_KEY] = pending
    response = HttpResponseRedirect(_url(reveal_id))
    response.status_code = 303  # See Other: the browser fetches the page with GET
    sealed.give_key(response, COOKIE_PREFIX + reveal_id, key, max_age=COOKIE_SECONDS, path=_url(reveal_id))
    return response


def take(request: HttpRequest, reveal_id: str) -> dict[str, Any] | None:
    """The sealed credentials, opened and forgotten; None when already shown (or never sealed here)."""
    pending: dict[str, str] = dict(request.session.get(SESSION_KEY, {}))
    blob = pending.pop(reveal_id, None)
    if blob is None:
        return None
    request.session[SESSION_KEY] = pending
    # Saved now, not at the end of the request: a second tab must not find it too.
    request.session.save()
    try:
        key = sealed.decode_key(request.COOKIES.get(COOKIE_PREFIX + reveal_id, ""))
        opened: dict[str, Any] = json.loads(sealed.decrypt(key, base64.b64decode(blob), _bound(reveal_id)))
    except sealed.Unreadable:
        return None
    return opened


def forget_cookie(response: HttpResponse, reveal_id: str) -> None:
    response.delete_cookie(COOKIE_PREFIX + reveal_id, path=_url(reveal_id), samesite="Strict")
