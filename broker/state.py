"""What the broker must enforce, read from the database: revoked devices, active devices, rules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from broker.acl import ExtraRule
from broker.models import AclRule
from pki.models import Certificate, CertificatePurpose, CertificateStatus


@dataclass(frozen=True)
class BrokerState:
    """What the broker must enforce, read from the database."""

    revoked_device_ids: list[str]
    extra_rules: list[ExtraRule]
    #: Devices holding a valid certificate (only backends with a client per device need them).
    active_device_ids: list[str] | None = None


def _among(queryset: QuerySet[Any], field: str, values: Sequence[str]) -> Iterator[Any]:
    """`queryset.filter(field__in=values)` in bounded IN lists (SQLite allows few parameters)."""
    for start in range(0, len(values), 500):
        yield from queryset.filter(**{f"{field}__in": values[start : start + 500]})


def active_device_ids(among: Sequence[str] | None = None) -> list[str]:
    """Devices holding a valid certificate: all of them, or those of `among` (a change)."""
    devices = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE).order_by()
    if among is None:
        return sorted(devices.active().values_list("common_name", flat=True).distinct())
    # By name, then validity here: told the status too, SQLite's planner takes the
    # (status, not_after) index and reads every valid certificate of the fleet for a few names.
    now = timezone.now()
    rows = _among(devices.values_list("common_name", "status", "not_after"), "common_name", among)
    return sorted(
        {name for name, status, not_after in rows if status == CertificateStatus.ACTIVE and not_after > now}
    )


def extra_rules(among: Sequence[str] | None = None) -> list[ExtraRule]:
    """The rules of active devices (all, or those of `among`)."""
    rules = AclRule.objects.filter(device__status="active").values_list("device_id", "topic_filter", "access")
    found = rules if among is None else _among(rules, "device_id", among)
    return [ExtraRule(str(device_id), topic_filter, access) for device_id, topic_filter, access in found]


def desired_state(*, with_active: bool = False) -> BrokerState:
    """Devices whose certificates are on the CRL and that hold no valid certificate are denied
    their topics (a re-issued device keeps them: its old certificate is on the CRL, its new one
    is valid). Extra rules count only for active devices."""
    device_certificates = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE)
    # Start from the (small) revoked set and look up only those names among the valid
    # certificates: an exclusion subquery over every valid certificate grows with the fleet.
    on_crl = set(device_certificates.on_crl().order_by().values_list("common_name", flat=True).distinct())
    still_valid = set(active_device_ids(among=sorted(on_crl)))
    return BrokerState(
        revoked_device_ids=sorted(on_crl - still_valid),
        extra_rules=extra_rules(),
        active_device_ids=active_device_ids() if with_active else None,
    )
