"""Which MQTT topics a device may use: pure functions of plain values.

Every device owns the tree `devices/{device-id}/#`. The rule is implicit: on Mosquitto it is
one `pattern readwrite devices/%u/#` line for the whole fleet (the certificate CN is the
username), which costs nothing at any fleet size, where per-device blocks cost O(n²) to load.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.access import Access

DEVICE_TOPIC_ROOT = "devices"


@dataclass(frozen=True)
class TopicRule:
    filter: str
    access: str


def default_rules(device_id: str) -> list[TopicRule]:
    """The rights every active device has: read and write below its own tree."""
    return [TopicRule(filter=f"{DEVICE_TOPIC_ROOT}/{device_id}/#", access=Access.READWRITE.value)]
