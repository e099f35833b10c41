"""Broker backends: one module each, behind one interface, chosen by BROKER_BACKEND.

BROKER_BACKEND is one of the names in `BACKENDS` (today's values) or the dotted path of a
`BrokerBackend` subclass; either is loaded with `import_string`. A name that is not known, a
path that does not import, or a class that is not a backend raises `BrokerSyncError`, which
the system check broker.E001 (broker/checks.py) turns into an error at start-up.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from django.conf import settings
from django.utils.module_loading import import_string

from broker.errors import BrokerSyncError
from broker.state import BrokerState

#: BROKER_BACKEND's names, and the class each one stands for.
BACKENDS: dict[str, str] = {
    "mosquitto_acl": "broker.backends.acl.MosquittoAclBackend",
    "mosquitto_dynsec": "broker.backends.dynsec.MosquittoDynsecBackend",
}


@dataclass(frozen=True)
class Applied:
    """What a backend gave the broker."""

    #: A digest of what the broker now holds (the ACL file; the dynamic-security clients).
    fingerprint: str
    crl_number: int | None
    revoked_devices: int
    extra_rules: int
    #: False when the broker's CRL was already current and nothing else needs a reload.
    needs_reload: bool = True
    #: How many devices a change touched; None for a full sync.
    changed_devices: int | None = None


class BrokerBackend(ABC):
    """How topic rights and the CRL reach one kind of broker."""

    name: ClassVar[str]
    #: What revoking a device does to its live session on this backend, as the portal says it.
    live_session_effect: ClassVar[str]
    #: Whether a newly registered device needs the broker told (a client per device).
    grants_on_register: ClassVar[bool]
    #: Whether the backend needs the list of active devices in its state.
    needs_active_devices: ClassVar[bool]

    @abstractmethod
    def apply(self, state: BrokerState) -> Applied:
        """Bring the whole broker in step with the state (a full sync)."""

    @abstractmethod
    def apply_changes(self, device_ids: list[str]) -> Applied:
        """Bring the broker in step for these devices (their registration, revocation, rules)."""

    @abstractmethod
    def drift(self, state: BrokerState) -> list[str]:
        """How the broker differs from the state, in words (empty: in step)."""


def backend_class(setting: str) -> type[BrokerBackend]:
    """The backend class BROKER_BACKEND names: one of `BACKENDS`, or a dotted path."""
    if setting not in BACKENDS and "." not in setting:
        names = ", ".join(sorted(BACKENDS))
        raise BrokerSyncError(f"BROKER_BACKEND '{setting}' is not one of: {names}.")
    try:
        found = import_string(BACKENDS.get(setting, setting))
    except ImportError as exc:
        raise BrokerSyncError(f"BROKER_BACKEND '{setting}' cannot be imported: {exc}.") from None
    if not (isinstance(found, type) and issubclass(found, BrokerBackend)) or inspect.isabstract(found):
        raise BrokerSyncError(
            f"BROKER_BACKEND '{setting}' is not a broker backend (a complete subclass of "
            "broker.backends.BrokerBackend)."
        )
    return found


def get_backend() -> BrokerBackend:
    return backend_class(settings.BROKER_BACKEND)()
