"""ACL rendering and topic-filter rules, without a broker."""

from __future__ import annotations

import pytest

from broker.acl import (
    DEVICE_PATTERN_LINE,
    ExtraRule,
    InvalidTopicFilter,
    check_acl,
    reaches_other_devices,
    render_acl,
    validate_topic_filter,
)

A = "0b4c6f0e-1111-4c35-9d7e-0b0c0d0e0f10"
B = "9a1d2e3f-2222-4c35-9d7e-0b0c0d0e0f10"


def test_every_device_gets_its_tree_from_one_pattern_line() -> None:
    text = render_acl([], [])
    assert DEVICE_PATTERN_LINE in text.splitlines()
    assert "user " not in text
    check_acl(text)


def test_revoked_devices_are_denied_and_lose_their_extra_rules() -> None:
    text = render_acl([B], [ExtraRule(A, "fleet/commands", "read"), ExtraRule(B, "fleet/status", "write")])
    lines = text.splitlines()
    assert lines[lines.index(f"user {B}") + 1] == f"topic deny devices/{B}/#"
    assert "topic write fleet/status" not in lines
    assert lines[lines.index(f"user {A}") + 1] == "topic read fleet/commands"
    check_acl(text)


def test_rendering_is_deterministic() -> None:
    rules = [ExtraRule(B, "x/y", "read"), ExtraRule(A, "z", "write")]
    assert render_acl([B, A], rules) == render_acl([A, B], list(reversed(rules)))


@pytest.mark.parametrize("topic_filter", ["a/b", "a/+/c", "a/#", "#", "+", "devices/x/+/y"])
def test_valid_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    ["", "a/#/b", "a#", "a/b+", "$SYS/#", " a", "a\nb", "x" * 300, "fleet/cmd a", "a\u2028b", "a\vb"],
)
def test_invalid_filters(topic_filter: str) -> None:
    with pytest.raises(InvalidTopicFilter):
        validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "reaches"),
    [
        (f"devices/{A}/extra", False),
        (f"devices/{B}/commands", True),
        ("devices/+/status", True),
        ("devices/#", True),
        ("#", True),
        ("+/x", True),
        ("fleet/commands", False),
        ("devices", False),
    ],
)
def test_reaching_other_devices(topic_filter: str, reaches: bool) -> None:
    assert reaches_other_devices(topic_filter, A) is reaches


@pytest.mark.parametrize(
    "text",
    [
        "user x\ntopic readwrite #\n",  # no device pattern: every device would lose its tree
        f"{DEVICE_PATTERN_LINE}\npattern readwrite #\n",  # a grant the portal never writes
        f"{DEVICE_PATTERN_LINE}\nuser {A}\ntopic readwrite a/#/b\n",  # broken filter
        f"{DEVICE_PATTERN_LINE}\nuser {A}; rm -rf /\n",
    ],
)
def test_check_refuses_what_the_portal_never_writes(text: str) -> None:
    with pytest.raises(ValueError):
        check_acl(text)


def test_dynsec_plan_creates_deletes_and_rebuilds_rule_roles() -> None:
    from broker.dynsec import ADMIN_CN, plan

    existing_clients = {ADMIN_CN, A, B}
    existing_roles = {"onboarding-admin", f"device-{A}", f"device-{B}", f"rules-{A}"}
    new = "3c3c3c3c-3333-4c35-9d7e-0b0c0d0e0f10"
    commands = plan(existing_clients, existing_roles, {A, new}, {A: [ExtraRule(A, "fleet/x", "read")]})
    names = [(command["command"], command.get("username") or command.get("rolename")) for command in commands]
    assert ("deleteClient", B) in names and ("deleteRole", f"device-{B}") in names  # revoked: gone
    assert ("deleteClient", ADMIN_CN) not in names  # the portal's own identity stays
    assert ("createRole", f"device-{new}") in names and ("createClient", new) in names
    assert ("createRole", f"device-{A}") not in names  # still there, kept
    assert names.index(("deleteRole", f"rules-{A}")) < names.index(("createRole", f"rules-{A}"))
    assert ("addClientRole", A) in names
