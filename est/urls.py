"""RFC 7030 3.2.2: the EST operations, under /.well-known/est/ (onboarding/urls.py)."""

from django.urls import path

from est import enroll, reenroll, views

app_name = "est"

urlpatterns = [
    path("cacerts", views.cacerts, name="cacerts"),
    path("csrattrs", views.csrattrs, name="csrattrs"),
    path("simpleenroll", enroll.simpleenroll, name="simpleenroll"),
    path("simplereenroll", reenroll.simplereenroll, name="simplereenroll"),
]
