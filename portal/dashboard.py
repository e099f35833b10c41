"""What the dashboard shows, computed from the models and the CA's files (read-only)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count
from django.utils import timezone

from audit.models import AuditEvent
from broker.models import BrokerSync
from devices.models import Device, DeviceStatus
from devices.renewal import renewal_due_devices
from kernel.errors import ServiceError
from pki.crl import crl_refresh_due, current_crl_record, read_published_crl
from pki.keystore import get_ca
from pki.models import Certificate, CertificatePurpose, CertificateRevocationList, ExpiryAlert

EXPIRY_DAYS = 30
# Buckets of the expiry chart: days from now, [start, end).
EXPIRY_BUCKETS = [(0, 7), (7, 14), (14, 21), (21, 28), (28, EXPIRY_DAYS + 1)]


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    x: int
    y: int
    height: int


@dataclass(frozen=True)
class CRLState:
    record: CertificateRevocationList | None
    state: str  # "fresh", "refresh due", "problem"
    problem: str = ""


@dataclass(frozen=True)
class BrokerState:
    last: BrokerSync | None
    in_step: bool
    note: str


@dataclass
class Dashboard:
    counts: dict[str, int]
    total: int
    expiring_total: int
    bars: list[Bar]
    chart_max: int
    crl: CRLState
    broker: BrokerState
    recent: list[AuditEvent]
    alerts: list[ExpiryAlert]
    ca_expires: dt.datetime | None = None
    #: Active devices inside their renewal window that have not renewed (the first few, and how many).
    renewal_due: list[Device] = field(default_factory=list)
    renewal_due_total: int = 0
    notes: list[str] = field(default_factory=list)


RENEWAL_DUE_SHOWN = 10
CHART_HEIGHT = 100
BAR_WIDTH = 40
BAR_GAP = 16


def status_counts() -> dict[str, int]:
    found = dict(Device.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {status.label: int(found.get(status.value, 0)) for status in DeviceStatus}


def expiry_bars(now: dt.datetime) -> tuple[list[Bar], int, int]:
    not_afters = list(
        Certificate.objects.expiring(EXPIRY_DAYS, now)
        .filter(purpose=CertificatePurpose.DEVICE)
        .values_list("not_after", flat=True)
    )
    counts = []
    for start, end in EXPIRY_BUCKETS:
        low, high = now + dt.timedelta(days=start), now + dt.timedelta(days=end)
        counts.append(sum(1 for when in not_afters if low <= when < high))
    top = max([*counts, 1])
    bars = []
    for index, ((start, end), count) in enumerate(zip(EXPIRY_BUCKETS, counts, strict=True)):
        height = round(CHART_HEIGHT * count / top)
        label = f"{start}-{min(end, EXPIRY_DAYS + 1) - 1} days"
        bars.append(
            Bar(
                label=label,
                count=count,
                x=index * (BAR_WIDTH + BAR_GAP),
                y=CHART_HEIGHT - height,
                height=height,
            )
        )
    return bars, top, len(not_afters)


def crl_state(now: dt.datetime) -> CRLState:
    record = current_crl_record()
    try:
        read_published_crl(now)
    except ServiceError as error:
        return CRLState(record, "problem", error.message)
    return CRLState(record, "refresh due" if crl_refresh_due(now) else "fresh")


def broker_state(crl: CertificateRevocationList | None) -> BrokerState:
    last = BrokerSync.objects.order_by("-synced_at").first()
    if last is None:
        return BrokerState(None, False, "The broker has not been synchronised yet.")
    if crl is not None and last.crl_number is not None and last.crl_number < crl.number:
        return BrokerState(last, False, f"The broker holds CRL {last.crl_number}; the CA is at {crl.number}.")
    if not last.reloaded:
        return BrokerState(last, False, "The last configuration was written but the broker did not reload.")
    return BrokerState(last, True, "In step with the CA.")


def build(now: dt.datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    counts = status_counts()
    bars, top, expiring_total = expiry_bars(now)
    crl = crl_state(now)
    ca_expires = None
    try:
        ca_not_after = get_ca().certificate.not_valid_after_utc
        if ca_not_after - now <= dt.timedelta(days=EXPIRY_DAYS):
            ca_expires = ca_not_after
    except ServiceError:
        pass
    due = renewal_due_devices(now)
    return Dashboard(
        counts=counts,
        total=sum(counts.values()),
        expiring_total=expiring_total,
        bars=bars,
        chart_max=top,
        crl=crl,
        broker=broker_state(crl.record),
        recent=list(AuditEvent.objects.select_related("actor")[:10]),
        alerts=list(ExpiryAlert.objects.order_by("-sent_at")[:5]),
        ca_expires=ca_expires,
        renewal_due=list(Device.objects.filter(pk__in=due[:RENEWAL_DUE_SHOWN]).order_by("name")),
        renewal_due_total=len(due),
    )
