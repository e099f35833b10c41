from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Operator portal"

    def ready(self) -> None:
        from portal import history, signals  # noqa: F401  (session clock at sign-in)

        history.register_models()
