"""Device API routes: under /api/v1/ and, for the original design's clients, at the root."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from devices.api.views import DeviceViewSet


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with and without a trailing slash (`/devices/<id>` and `/devices/<id>/`)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("devices", DeviceViewSet, basename="device")

register_view = DeviceViewSet.as_view({"post": "create"})
retrieve_view = DeviceViewSet.as_view({"get": "retrieve"})
revoke_view = DeviceViewSet.as_view({"post": "revoke"})

# The original design's paths; the same views serve them under /api/v1/ too.
original_paths: list[URLPattern | URLResolver] = [
    path("register", register_view, name="register"),
    path("device/<str:pk>", retrieve_view, name="device-status"),
    path("revoke/<str:pk>", revoke_view, name="device-revoke"),
]

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
