"""GET /health: one answer per component, 503 naming whatever is wrong. No secrets, no paths."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cryptography import x509
from django.conf import settings
from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from broker.probe import probe_broker, probe_configured
from broker.services import broker_drift
from onboarding.api import error_responses
from onboarding.errors import ServiceError
from pki.errors import PKIError
from pki.keystore import get_ca
from pki.services import crl_path

CheckResult = dict[str, Any]


def _ok(**facts: Any) -> CheckResult:
    return {"status": "ok", **facts}


def _fail(message: str) -> CheckResult:
    return {"status": "fail", "message": message}


def check_database() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any driver error means "down"
        return _fail(f"the database does not answer ({type(exc).__name__})")
    return _ok(vendor=connection.vendor)


def check_ca() -> CheckResult:
    try:
        authority = get_ca()
    except PKIError as exc:
        return _fail(
            {"ca_not_initialized": "the CA has not been created"}.get(exc.code, "the CA key is unusable")
        )
    not_after = authority.certificate.not_valid_after_utc
    if not_after <= timezone.now():
        return _fail("the CA certificate has expired")
    return _ok(not_after=not_after.isoformat())


def check_crl() -> CheckResult:
    try:
        crl = x509.load_pem_x509_crl(crl_path().read_bytes())
    except FileNotFoundError:
        return _fail("no CRL has been published")
    except ValueError:
        return _fail("the published CRL cannot be parsed")
    next_update = crl.next_update_utc
    if next_update is None or next_update <= timezone.now():
        return _fail("the CRL's nextUpdate has passed: brokers will refuse every device")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return _ok(number=number, next_update=next_update.isoformat())


def check_acl_file() -> CheckResult:
    path = settings.BROKER_ACL_FILE
    target = path if path.exists() else path.parent
    if not target.exists():
        return _fail("the ACL file's directory does not exist")
    if not os.access(target, os.W_OK):
        return _fail("the ACL file is not writable")
    return _ok()


def check_task_queue() -> CheckResult:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return _ok(mode="in-process")
    from onboarding.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - kombu raises many transport-specific errors
        return _fail(f"the task queue broker does not answer ({type(exc).__name__})")
    return _ok(mode="workers")


def check_broker() -> CheckResult:
    """Drift between the database and the broker's files, then a live mTLS probe: the monitoring
    identity must get in and the revoked canary must be refused (proof of a loaded, current CRL)."""
    try:
        drift = broker_drift()
    except ServiceError as exc:
        return _fail(exc.message)
    if drift:
        return _fail("out of step with the database: " + "; ".join(drift))
    if not probe_configured():
        return _ok(probe="not configured (run mosquitto_config)")
    result = probe_broker()
    if not result.monitor_connected:
        return _fail("the broker refused or did not answer the monitoring connection")
    if not result.canary_refused:
        return _fail("the broker let a revoked certificate in: its CRL is missing or stale")
    return _ok(probe="monitor connected, revoked canary refused")


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "ca": check_ca,
    "crl": check_crl,
    "acl_file": check_acl_file,
    "task_queue": check_task_queue,
    "broker": check_broker,
}


def collect() -> tuple[bool, dict[str, CheckResult]]:
    results = {name: check() for name, check in CHECKS.items()}
    return all(result["status"] == "ok" for result in results.values()), results


HEALTH_SERIALIZER = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "fail"]),
        "failed": serializers.ListField(child=serializers.CharField(), required=False),
        "checks": serializers.DictField(child=serializers.DictField()),
    },
)


@extend_schema(
    summary="Health of every component",
    # 429: the anonymous throttle counts /health too.
    responses={200: HEALTH_SERIALIZER, 503: HEALTH_SERIALIZER, **error_responses(429)},
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def health(request: Request) -> Response:
    healthy, results = collect()
    body: dict[str, Any] = {"status": "ok" if healthy else "fail", "checks": results}
    if not healthy:
        body["failed"] = [name for name, result in results.items() if result["status"] != "ok"]
    response = Response(body, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
