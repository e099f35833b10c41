from django.apps import AppConfig


class EstConfig(AppConfig):
    name = "est"
    verbose_name = "Enrolment over Secure Transport (RFC 7030)"
