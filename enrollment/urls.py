"""The portal's enrolment group pages, under /portal/enrollment-groups/."""

from django.urls import path

from enrollment import views

app_name = "enrollment"

urlpatterns = [
    path("", views.group_list, name="group-list"),
    path("add/", views.group_add, name="group-add"),
    path("<uuid:group_id>/enabled/", views.group_enable, name="group-enable"),
]
