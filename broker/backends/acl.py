"""Mosquitto with an acl_file and a crlfile, reloaded with SIGHUP (or a command).

Everything the broker is given is rendered wholly from the database, checked, and written
atomically: a file that fails its check is never put in place.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings

from broker.acl import check_acl, render_acl
from broker.backends import Applied, BrokerBackend
from broker.crl_copy import copy_crl_to_broker, crl_drift, write_broker_file
from broker.errors import BrokerSyncError
from broker.state import BrokerState, desired_state


class MosquittoAclBackend(BrokerBackend):
    """Mosquitto with an acl_file and a crlfile, reloaded with SIGHUP (or a command)."""

    name = "mosquitto_acl"
    # Mosquitto cannot end a session from an ACL file: the reload takes the device's topics away.
    live_session_effect = (
        "A live MQTT session of the device stays connected but loses its topics: its publishes are "
        "refused (MQTT 5 PUBACK reason 135, not authorized) and messages on its topics no longer "
        "reach it."
    )
    grants_on_register = False
    needs_active_devices = False

    def _render(self, state: BrokerState) -> str:
        text = render_acl(state.revoked_device_ids, state.extra_rules)
        try:
            check_acl(text)
        except ValueError as exc:
            raise BrokerSyncError(f"The rendered ACL failed its check ({exc}); the old ACL stays.") from None
        return text

    def apply(self, state: BrokerState) -> Applied:
        # The CRL first and on its own: a problem with the ACL must never hold back revocations.
        number = copy_crl_to_broker()
        acl = self._render(state).encode()
        write_broker_file(Path(settings.BROKER_ACL_FILE), acl)
        return Applied(
            hashlib.sha256(acl).hexdigest(), number, len(state.revoked_device_ids), len(state.extra_rules)
        )

    def apply_changes(self, device_ids: list[str]) -> Applied:
        # The ACL file is one file: a change is a full render (it grows with revocations and
        # rules, not with the fleet: devices/{id}/# is one pattern line for every device).
        return self.apply(desired_state())

    def drift(self, state: BrokerState) -> list[str]:
        found = []
        expected_acl = self._render(state).encode()
        try:
            on_disk = Path(settings.BROKER_ACL_FILE).read_bytes()
        except OSError:
            on_disk = None
        if on_disk != expected_acl:
            found.append("the ACL file differs from what the database says")
        return found + crl_drift()
