from django.urls import path

from pki import views

urlpatterns = [
    path("crl.pem", views.crl_pem, name="crl-pem"),
    path("ca.crl", views.crl_der, name="crl-der"),
    path("ca.crt", views.ca_certificate, name="ca-certificate"),
]
