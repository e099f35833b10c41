from django.contrib import admin
from django.urls import include, path

from onboarding import views

urlpatterns = [
    path("", views.home, name="home"),
    path("", include("pki.urls")),
    path("admin/", admin.site.urls),
]
