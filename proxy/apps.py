from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "TLS front (nginx)"

    def ready(self) -> None:
        from proxy import checks  # noqa: F401  (registers the system checks)
