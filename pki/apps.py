from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "Certificate authority"

    def ready(self) -> None:
        from pki import checks  # noqa: F401  (registers the system checks)
