"""The project's URLs plus `/probe/client-certificate`: the subject of the client certificate the
portal believes (proxy.client_cert.verified_client_certificate), or `none`. Tests only."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path

from onboarding.urls import handler400, handler404, handler500
from onboarding.urls import urlpatterns as project_urlpatterns
from proxy.client_cert import verified_client_certificate

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]


def client_certificate(request: HttpRequest) -> HttpResponse:
    certificate = verified_client_certificate(request)
    return HttpResponse(
        certificate.subject.rfc4514_string() if certificate else "none", content_type="text/plain"
    )


urlpatterns: list[URLPattern | URLResolver] = [
    path("probe/client-certificate", client_certificate),
    *project_urlpatterns,
]
