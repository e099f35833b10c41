from django.apps import AppConfig


class EnrollmentConfig(AppConfig):
    name = "enrollment"
    verbose_name = "Enrolment"

    def ready(self) -> None:
        from enrollment import checks  # noqa: F401  (registers the system checks)
