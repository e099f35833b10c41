"""The Mosquitto ACL file: rendered from plain values, and checked before it replaces the old one.

Layout of the rendered file:

* one `pattern readwrite devices/%u/#` line grants every device its own tree (the certificate
  CN is the MQTT username); it costs nothing at any fleet size, where per-user blocks cost
  O(n²) for Mosquitto to load, with the broker frozen meanwhile (docs/benchmarks.md);
* a `user` block per revoked device with `topic deny devices/<id>/#`: Mosquitto applies deny
  lines before grants, so a revoked device's live session loses its topics at the reload
  (the CRL stops it reconnecting);
* a `user` block per active device with extra rules, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from broker.access import MOSQUITTO_KEYWORDS, Access
from broker.rules import DEVICE_TOPIC_ROOT

DEVICE_PATTERN_LINE = f"pattern {Access.READWRITE.value} {DEVICE_TOPIC_ROOT}/%u/#"
MAX_TOPIC_FILTER_LENGTH = 256


class InvalidTopicFilter(ValueError):
    pass


def validate_topic_filter(topic_filter: str) -> None:
    """MQTT 3.1.1 4.7 / 5.0 4.7: `#` only as the whole last level, `+` only as a whole level."""
    if not topic_filter:
        raise InvalidTopicFilter("A topic filter cannot be empty.")
    if len(topic_filter) > MAX_TOPIC_FILTER_LENGTH:
        raise InvalidTopicFilter(f"A topic filter is at most {MAX_TOPIC_FILTER_LENGTH} characters.")
    if any(char.isspace() or not char.isprintable() for char in topic_filter):
        # One token on an ACL line: whitespace or control characters would change its meaning.
        raise InvalidTopicFilter("A topic filter cannot hold spaces or control characters.")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise InvalidTopicFilter("'#' may only be the whole last level of a topic filter.")
        if "+" in level and level != "+":
            raise InvalidTopicFilter("'+' may only stand for a whole level of a topic filter.")
    if topic_filter.startswith("$"):
        raise InvalidTopicFilter("Topics starting with '$' belong to the broker.")


def reaches_other_devices(topic_filter: str, device_id: str) -> bool:
    """Whether the filter can match topics in another device's tree (or the whole device root)."""
    levels = topic_filter.split("/")
    if levels[0] == "#":
        return True
    if levels[0] not in ("+", DEVICE_TOPIC_ROOT) or len(levels) == 1:
        # Another root, or a single level: no device tree (devices/<id>/...) can match.
        return False
    return levels[1] != device_id


@dataclass(frozen=True)
class ExtraRule:
    device_id: str
    topic_filter: str
    access: str


def render_acl(revoked_device_ids: Iterable[str], extra_rules: Iterable[ExtraRule]) -> str:
    lines = [
        "# Mosquitto ACL written by the IoT onboarding portal; every change here is overwritten.",
        "# Every device may use its own tree; the username is the certificate CN (the device id).",
        DEVICE_PATTERN_LINE,
        "",
    ]
    revoked = sorted(set(revoked_device_ids))
    for device_id in revoked:
        lines += [f"user {device_id}", f"topic deny {DEVICE_TOPIC_ROOT}/{device_id}/#", ""]
    revoked_set = set(revoked)
    by_device: dict[str, list[ExtraRule]] = {}
    for rule in extra_rules:
        if rule.device_id not in revoked_set:
            by_device.setdefault(rule.device_id, []).append(rule)
    for device_id in sorted(by_device):
        lines.append(f"user {device_id}")
        lines += [f"topic {rule.access} {rule.topic_filter}" for rule in by_device[device_id]]
        lines.append("")
    return "\n".join(lines)


_KEYWORDS = "|".join(MOSQUITTO_KEYWORDS)
_LINE = re.compile(
    rf"^(?:#.*|{re.escape(DEVICE_PATTERN_LINE)}|user [0-9a-f-]{{36}}|topic ({_KEYWORDS}) \S+|)$"
)


def check_acl(text: str) -> None:
    """Refuse a file Mosquitto could misread: every line must be one we write, and the device
    grant must be there (without it every device would lose its topics)."""
    lines = text.split("\n")
    if DEVICE_PATTERN_LINE not in lines:
        raise ValueError("The ACL lacks the device pattern line.")
    for number, line in enumerate(lines, start=1):
        if not _LINE.match(line):
            raise ValueError(f"ACL line {number} is not one the portal writes: {line[:80]!r}")
        if line.startswith("topic "):
            validate_topic_filter(line.split(" ", 2)[2])
