from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "iotp_"  # noqa: S105 - a public marker, not a secret


def token_digest(token: str) -> str:
    """HMAC-SHA256 of the token keyed with a key derived from SECRET_KEY.

    A stolen database gives digests only; without SECRET_KEY they cannot even be checked
    offline against guesses.
    """
    key = hashlib.sha256(b"api-token-digest:" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


class ApiToken(models.Model):
    """An integrator's API token. Only its digest is stored; the token is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    digest = models.CharField(max_length=64, unique=True)
    # The first characters, to tell tokens apart in lists without revealing them.
    prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # A revoked token stays listed (who had it, when it was last used) and fails at once.
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [("revoke_apitoken", "Can revoke API tokens")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @classmethod
    def new_token_value(cls) -> str:
        # 256 bits from the CSPRNG, URL-safe, with a prefix secret scanners can recognise.
        return TOKEN_PREFIX + secrets.token_urlsafe(32)
