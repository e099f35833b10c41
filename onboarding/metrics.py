"""GET /metrics: Prometheus text format, for a scraper holding the token or on an allowed network.

Two sources: django-prometheus's per-process request, response and latency metrics, and the
product's own figures, computed from the database and the published CRL at scrape time (a
custom collector), so every web process answers the same numbers and nothing is lost when a
process restarts.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import os
from collections.abc import Iterator

import prometheus_client
from cryptography import x509
from django.conf import settings
from django.db.models import Count, Min, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from api.errors import error_body
from kernel.addresses import client_address

# docs/deployment.md "Metrics" lists these; dashboards and alerts depend on the names.
EXPIRING_WITHIN_DAYS = 30


class ProductCollector(Collector):
    """Certificates, CRL, broker and download-link figures, read fresh on every scrape."""

    def collect(self) -> Iterator[Metric]:
        # Imported here: the collector module loads with the URLconf, before apps need to be.
        from broker.models import BrokerSync
        from devices.models import DownloadLink
        from devices.renewal import renewal_due_devices
        from pki.models import Certificate, CertificateRevocationList, CertificateStatus

        now = timezone.now()
        issued = CounterMetricFamily(
            "onboarding_certificates_issued",
            "Certificates the CA has signed, by purpose.",
            labels=["purpose"],
        )
        revoked = CounterMetricFamily(
            "onboarding_certificates_revoked", "Certificates revoked, by purpose.", labels=["purpose"]
        )
        counts = (
            Certificate.objects.order_by()
            .values("purpose")
            .annotate(total=Count("pk"), revoked=Count("pk", filter=Q(status=CertificateStatus.REVOKED)))
        )
        for row in counts:
            issued.add_metric([row["purpose"]], row["total"])
            revoked.add_metric([row["purpose"]], row["revoked"])
        yield issued
        yield revoked
        yield GaugeMetricFamily(
            "onboarding_certificates_expiring",
            f"Active certificates whose validity ends within {EXPIRING_WITHIN_DAYS} days.",
            value=Certificate.objects.expiring(EXPIRING_WITHIN_DAYS, now).count(),
        )
        yield GaugeMetricFamily(
            "onboarding_devices_renewal_due",
            "Active devices inside their renewal window (RENEWAL_WINDOW_PERCENT) that have not renewed.",
            value=len(renewal_due_devices(now)),
        )
        yield from _crl_metrics(now)

        latest_sync = BrokerSync.objects.order_by("-synced_at").first()
        current_crl = CertificateRevocationList.objects.order_by("-number").first()
        lag = 0.0
        if current_crl is not None and (
            latest_sync is None or (latest_sync.crl_number or 0) < current_crl.number
        ):
            # The broker holds an older CRL: lagging since the first CRL it has not been given.
            unsynced = CertificateRevocationList.objects.filter(
                number__gt=(latest_sync.crl_number or 0) if latest_sync else 0
            ).aggregate(since=Min("created_at"))["since"]
            lag = max(0.0, (now - (unsynced or now)).total_seconds())
        yield GaugeMetricFamily(
            "onboarding_broker_sync_lag_seconds",
            "How long the broker's copy of the CRL has lagged the newest CRL (0: in step).",
            value=lag,
        )
        if latest_sync is not None:
            yield GaugeMetricFamily(
                "onboarding_broker_last_sync_timestamp_seconds",
                "When the portal last pushed the ACL and CRL to the broker (Unix time).",
                value=latest_sync.synced_at.timestamp(),
            )

        links = DownloadLink.objects.aggregate(
            used=Count("pk", filter=Q(used_at__isnull=False)),
            expired=Count(
                "pk", filter=Q(used_at__isnull=True, withdrawn_at__isnull=True, expires_at__lte=now)
            ),
            withdrawn=Count("pk", filter=Q(used_at__isnull=True, withdrawn_at__isnull=False)),
            waiting=Count(
                "pk", filter=Q(used_at__isnull=True, withdrawn_at__isnull=True, expires_at__gt=now)
            ),
        )
        states = GaugeMetricFamily(
            "onboarding_download_links",
            "Credential download links by state: used, expired unused, withdrawn, waiting.",
            labels=["state"],
        )
        for state, count in links.items():
            states.add_metric([state], count)
        yield states


def _crl_metrics(now: dt.datetime) -> Iterator[Metric]:
    from pki.crl import crl_number, crl_path

    try:
        crl = x509.load_pem_x509_crl(crl_path().read_bytes())
    except (OSError, ValueError):
        return  # no CRL yet: absent series, which an alert on absent() catches
    yield GaugeMetricFamily(
        "onboarding_crl_age_seconds", "Seconds since the published CRL's thisUpdate.",
        value=(now - crl.last_update_utc).total_seconds(),
    )  # fmt: skip
    if crl.next_update_utc is not None:
        yield GaugeMetricFamily(
            "onboarding_crl_next_update_seconds",
            "Seconds until the published CRL's nextUpdate; brokers refuse every device after it.",
            value=(crl.next_update_utc - now).total_seconds(),
        )
    yield GaugeMetricFamily("onboarding_crl_number", "The published CRL's CRL number.", value=crl_number(crl))


_product_registry = CollectorRegistry(auto_describe=False)
_product_registry.register(ProductCollector())


def exposition() -> bytes:
    """The process's (or, under gunicorn with PROMETHEUS_MULTIPROC_DIR, every worker's) metrics,
    then the product's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process_registry = CollectorRegistry()
        MultiProcessCollector(process_registry)  # type: ignore[no-untyped-call]
    else:
        process_registry = prometheus_client.REGISTRY
    return prometheus_client.generate_latest(process_registry) + prometheus_client.generate_latest(
        _product_registry
    )


def _address_allowed(request: HttpRequest) -> bool:
    address = client_address(request)
    if not address or not settings.METRICS_ALLOWED_NETWORKS:
        return False
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS)


def _token_given(request: HttpRequest) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """A matching bearer token (METRICS_TOKEN) or an address in METRICS_ALLOWED_NETWORKS admits."""
    token = _token_given(request)
    expected: str = settings.METRICS_TOKEN
    if token is not None and expected and hmac.compare_digest(token.encode(), expected.encode()):
        return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)
    if token is None and _address_allowed(request):
        return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)
    if token is not None or expected:
        response = JsonResponse(
            error_body(
                "metrics_token_invalid" if token is not None else "metrics_token_required",
                "Send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`.",
            ),
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return JsonResponse(
        error_body(
            "metrics_forbidden",
            "Metrics are served only with METRICS_TOKEN or to METRICS_ALLOWED_NETWORKS; neither admits you.",
        ),
        status=403,
    )
