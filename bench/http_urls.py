"""The project's URLs plus two bare DRF endpoints: the raw limit of "DRF served this way".

`/bench/bare` keeps the project's REST_FRAMEWORK defaults (token or session authentication,
IsAuthenticated, the throttles, the JSON renderer), so the comparison with `GET /device/<id>`
isolates what the device view adds: its queries and its serializer. `/bench/bare-anonymous`
drops authentication, permission and throttles: what DRF and the middleware cost alone.
Both return a small JSON object and touch no table of their own. Served only by the benchmarks
(`DJANGO_SETTINGS_MODULE=bench.http_settings`), never by the product.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from onboarding.urls import handler400, handler404, handler500
from onboarding.urls import urlpatterns as project_urlpatterns

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]


class BareView(APIView):
    """The project's authentication, permission and throttle classes; no work of its own."""

    def get(self, request: Request) -> Response:
        return Response({"status": "ok", "user": request.user.get_username()})


class AnonymousBareView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    def get(self, request: Request) -> Response:
        return Response({"status": "ok", "user": ""})


urlpatterns: list[URLPattern | URLResolver] = [
    path("bench/bare", BareView.as_view(), name="bench-bare"),
    path("bench/bare-anonymous", AnonymousBareView.as_view(), name="bench-bare-anonymous"),
    *project_urlpatterns,
]
