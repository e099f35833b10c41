from django.urls import path

from portal.views import auth, bulk, devices

app_name = "portal"

urlpatterns = [
    path("", devices.dashboard, name="dashboard"),
    path("login/", auth.login, name="login"),
    path("login/verify/", auth.login_verify, name="login-verify"),
    path("login/enrol/", auth.enrol, name="enrol"),
    path("logout/", auth.logout, name="logout"),
    path("devices/", devices.device_list, name="device-list"),
    path("devices/register/", devices.register, name="register"),
    path("devices/<uuid:device_id>/", devices.device_detail, name="device-detail"),
    path("devices/<uuid:device_id>/revoke/", devices.revoke, name="revoke"),
    path("devices/<uuid:device_id>/reissue/", devices.reissue, name="reissue"),
    path("devices/<uuid:device_id>/link/", devices.new_link, name="new-link"),
    path("devices/<uuid:device_id>/retry/", devices.retry, name="retry"),
    path("devices/<uuid:device_id>/request-renewal/", devices.request_renewal, name="request-renewal"),
    path("credentials/<str:reveal_id>/", devices.show_credentials, name="reveal"),
    path("bulk/", bulk.upload, name="bulk-upload"),
    path("bulk/<uuid:job_id>/", bulk.job_page, name="bulk-job"),
    path("bulk/<uuid:job_id>/start", bulk.start, name="bulk-start"),
    path("bulk/<uuid:job_id>/progress", bulk.progress, name="bulk-progress"),
    path("bulk/<uuid:job_id>/results.csv", bulk.results, name="bulk-results"),
]
