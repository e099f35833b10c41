"""Enrolment group API routes, under /api/v1/."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

from devices.api.urls import OptionalSlashRouter
from enrollment.api.views import EnrollmentGroupViewSet

router = OptionalSlashRouter()
router.register("enrollment-groups", EnrollmentGroupViewSet, basename="enrollment-group")

urlpatterns: list[URLPattern | URLResolver] = [*router.urls]
