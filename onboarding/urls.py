from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.admin import StaffAdminSite
from accounts.forms import AdminLoginForm
from devices.api.urls import original_paths
from devices.views import DownloadView
from onboarding import health, metrics, views

# Every admin login needs a second factor: the admin site only admits OTP-verified staff, and
# only in a role that works in a browser (accounts.roles: integrators are API-only).
admin.site.__class__ = StaffAdminSite
admin.site.login_form = AdminLoginForm

handler400 = "api.handlers.bad_request"
handler404 = "api.handlers.not_found"
handler500 = "api.handlers.server_error"

# Swagger UI under the portal's policy: its start-up script is served as a file (the split view)
# and its inline styles moved to a static file (templates/drf_spectacular/); it draws its icons
# as data: images, which this page alone allows.
api_docs = csp_update({"img-src": ["data:"]})(SpectacularSwaggerSplitView.as_view(url_name="schema"))

api_v1 = [
    *original_paths,
    path("health", health.health, name="health-v1"),
    path("", include("devices.api.urls")),
    path("", include("enrollment.api.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("", include("pki.urls")),
    # RFC 7030 3.2.2: Enrolment over Secure Transport.
    path(".well-known/est/", include("est.urls")),
    # The original design's paths, at the root, for existing clients.
    *original_paths,
    path("health", health.health, name="health"),
    path("metrics", metrics.metrics, name="metrics"),
    path("download/<str:token>", DownloadView.as_view(), name="download"),
    path("api/v1/", include((api_v1, "v1"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", api_docs, name="api-docs"),
    path("portal/", include("portal.urls")),
    path("portal/enrollment-groups/", include("enrollment.urls")),
    path("admin/", admin.site.urls),
]
