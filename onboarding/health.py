"""GET /health: one answer per component, 503 naming whatever is wrong. No secrets, no paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from api.schema import error_responses
from broker.address import broker_set_up
from broker.probe import UNREACHABLE, probe_broker, probe_configured
from broker.sync import broker_drift
from kernel.errors import ServiceError
from kernel.tasks import tasks_run_in_process
from pki.crl import read_published_crl
from pki.errors import PKIError
from pki.keystore import get_ca

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
    """The CRL as it is served: parsed, signed by the CA and before its nextUpdate (pki.crl)."""
    try:
        published = read_published_crl()
    except PKIError as exc:
        return {"status": "fail", "code": exc.code, "message": exc.message}
    next_update = published.crl.next_update_utc
    return _ok(number=published.number, next_update=next_update.isoformat() if next_update else None)


def check_acl_file() -> CheckResult:
    path = settings.BROKER_ACL_FILE
    target = path if path.exists() else path.parent
    if not target.exists():
        return _fail("the ACL file's directory does not exist")
    if not os.access(target, os.W_OK):
        return _fail("the ACL file is not writable")
    return _ok()


def _refuses_writes(directory: Path) -> str | None:
    """Why `directory` takes no new file, or None. A real write, not os.access: root passes
    os.access on an immutable directory, and neither tells of a full disk."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".health-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_data_dir() -> CheckResult:
    """DATA_DIR and the CA directory (certificates, CRL, bundles) take files, and no revoked
    device's bundle is left on disk (a deletion the disk refused, until cleanup_bundles)."""
    from devices.delivery import revoked_bundles_left

    root = Path(settings.CA_ROOT_PATH)
    for label, directory in (("the data directory", Path(settings.DATA_DIR)), ("the CA directory", root),
                             ("the bundle directory", root / "devices")):  # fmt: skip
        if not directory.is_dir():
            if directory == root / "devices":
                continue  # made with the first bundle
            return _fail(f"{label} does not exist")
        problem = _refuses_writes(directory)
        if problem:
            return _fail(f"{label} cannot be written ({problem})")
    left = revoked_bundles_left()
    if left:
        return _fail(
            f"{len(left)} revoked device(s) still have a bundle on disk that could not be deleted "
            "(cleanup_bundles retries)"
        )
    return _ok()


def check_task_queue() -> CheckResult:
    if tasks_run_in_process():
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
    identity must get in and the revoked canary must be refused (proof of a loaded, current CRL).
    Before any broker is set up (a fresh install) there is nothing to check: `not_configured`."""
    if not broker_set_up():
        return {
            "status": "not_configured",
            "message": "no broker is set up yet: run mosquitto_config or set BROKER_PUBLIC_HOST",
        }
    try:
        drift = broker_drift()
    except ServiceError as exc:
        return _fail(exc.message)
    if drift:
        return _fail("out of step with the database: " + "; ".join(drift))
    if not probe_configured():
        return _ok(probe="not configured (run mosquitto_config)")
    result = probe_broker()
    if result.monitor_outcome == UNREACHABLE:
        return _fail(f"could not connect to the broker at {result.address} ({result.unreachable})")
    if not result.monitor_connected:
        return _fail(f"the broker at {result.address} refused the monitoring connection")
    if not result.canary_refused:
        return _fail(
            f"the broker at {result.address} let a revoked certificate in: its CRL is missing or stale"
        )
    return _ok(probe="monitor connected, revoked canary refused")


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "ca": check_ca,
    "crl": check_crl,
    "acl_file": check_acl_file,
    "data_dir": check_data_dir,
    "task_queue": check_task_queue,
    "broker": check_broker,
}


#: Statuses that leave the portal healthy: `not_configured` is a part not set up yet (a fresh
#: install), which is not a failure.
HEALTHY_STATUSES = ("ok", "not_configured")


#: Checks that query the database: with the database down they are not run. Each would wait for
#: its own connection attempt (DATABASE_CONNECT_TIMEOUT_SECONDS), and after a frozen server's
#: connection was cut (DATABASE_READ_TIMEOUT_SECONDS) the answer would come past 10 s.
NEEDS_DATABASE = ("data_dir", "broker")


def collect() -> tuple[bool, dict[str, CheckResult]]:
    results: dict[str, CheckResult] = {}
    for name, check in CHECKS.items():
        if name in NEEDS_DATABASE and results["database"]["status"] != "ok":
            results[name] = _fail("not checked: the database does not answer")
        else:
            results[name] = check()
    return all(result["status"] in HEALTHY_STATUSES for result in results.values()), results


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
        body["failed"] = [
            name for name, result in results.items() if result["status"] not in HEALTHY_STATUSES
        ]
    response = Response(body, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response
