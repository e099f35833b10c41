from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from accounts import roles
from devices.alerts import expiring_soon
from pki.crl import current_crl_record
from pki.errors import PKIError
from pki.keystore import get_ca
from pki.models import Certificate
from pki.profiles import sha256_fingerprint


def _verified_viewer(request: HttpRequest) -> bool:
    user = request.user
    is_verified = getattr(user, "is_verified", None)
    return bool(
        user.is_authenticated and is_verified is not None and is_verified() and user.has_perm(roles.VIEW)
    )


def home(request: HttpRequest) -> HttpResponse:
    """The portal's front page: the state of the certificate authority at a glance."""
    context: dict[str, object] = {"crl": current_crl_record()}
    try:
        authority = get_ca()
    except PKIError as exc:
        context["ca_error"] = exc.message
    else:
        context["ca"] = {
            "subject": authority.certificate.subject.rfc4514_string(),
            "not_after": authority.certificate.not_valid_after_utc,
            "fingerprint": sha256_fingerprint(authority.certificate),
        }
        # What anyone may fetch anyway (CA certificate, CRL) is public; the fleet's numbers are
        # for signed-in staff who passed the second factor, with a role that may view devices.
        if _verified_viewer(request):
            context["certificate_counts"] = {
                "active": Certificate.objects.active().count(),
                "revoked": Certificate.objects.revoked().count(),
            }
            context["expiring"] = expiring_soon()
            context["warning_days"] = settings.EXPIRY_WARNING_DAYS
    return render(request, "home.html", context)


@require_safe
@cache_control(max_age=86400, public=True)
def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """/favicon.ico, which browsers and tools ask for whatever the page says: the portal's icon
    (a static SVG; pages link it themselves). A redirect, so the image keeps its hashed,
    long-cached static name; not permanent, since that name changes with the image."""
    return HttpResponseRedirect(static("favicon.svg"))
