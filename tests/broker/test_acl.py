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
from broker.dynsec_plan import ADMIN_CN, Held, acl_keys, plan_device, suspects, wanted_roles

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


def _names(commands: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(command["command"], command.get("username") or command.get("rolename")) for command in commands]


def _held_as_planned(device_id: str, rules: list[ExtraRule]) -> Held:
    roles = {role["rolename"]: acl_keys(role["acls"]) for role in wanted_roles(device_id, True, rules)}
    return Held(client_roles=frozenset(roles), roles=roles)


def test_dynsec_plan_gives_a_new_device_its_role_and_client() -> None:
    commands = plan_device(A, Held(client_roles=None, roles={}), True, [])
    assert _names(commands) == [("createRole", f"device-{A}"), ("createClient", A)]
    assert commands[0]["acls"] and all(acl["topic"] == f"devices/{A}/#" for acl in commands[0]["acls"])
    assert commands[1]["roles"] == [{"rolename": f"device-{A}", "priority": 0}]


def test_dynsec_plan_sends_nothing_for_a_device_already_in_step() -> None:
    rules = [ExtraRule(A, "fleet/x", "read")]
    assert plan_device(A, _held_as_planned(A, rules), True, rules) == []
    assert plan_device(A, _held_as_planned(A, []), True, []) == []


def test_dynsec_plan_cuts_a_revoked_device_off_and_leaves_its_inert_roles_to_the_full_sync() -> None:
    held = _held_as_planned(B, [ExtraRule(B, "fleet/x", "write")])
    # deleteClient ends the live session at once; one command, one rewrite of the plugin's file.
    assert _names(plan_device(B, held, False, [])) == [("deleteClient", B)]
    # The full sync finds the roles without a client, and deletes them.
    orphaned = Held(client_roles=None, roles=held.roles)
    assert suspects({ADMIN_CN}, {f"device-{B}", f"rules-{B}"}, active=set(), with_rules=set()) == {B}
    names = _names(plan_device(B, orphaned, False, []))
    assert sorted(names) == [("deleteRole", f"device-{B}"), ("deleteRole", f"rules-{B}")]


def test_dynsec_plan_rebuilds_a_rule_role_whose_acls_changed_and_removes_foreign_roles() -> None:
    old = _held_as_planned(A, [ExtraRule(A, "fleet/x", "read")])
    assert old.client_roles is not None
    held = Held(client_roles=old.client_roles | {"operators"}, roles=old.roles)
    commands = plan_device(A, held, True, [ExtraRule(A, "fleet/x", "readwrite")])
    names = _names(commands)
    assert names.index(("deleteRole", f"rules-{A}")) < names.index(("createRole", f"rules-{A}"))
    assert ("addClientRole", A) in names and ("removeClientRole", A) in names
    assert ("createRole", f"device-{A}") not in names  # unchanged, kept
    added = next(command for command in commands if command["command"] == "addClientRole")
    assert added["rolename"] == f"rules-{A}" and added["priority"] == 1  # rules outrank the tree

    # Its rules all removed: the rule role goes (which also takes it off the client).
    assert _names(plan_device(A, old, True, [])) == [("deleteRole", f"rules-{A}")]


def test_dynsec_full_sync_looks_closely_only_at_devices_whose_names_disagree_or_have_rules() -> None:
    in_step = "1c1c1c1c-1111-4c35-9d7e-0b0c0d0e0f10"
    new = "3c3c3c3c-3333-4c35-9d7e-0b0c0d0e0f10"
    half = "4d4d4d4d-4444-4c35-9d7e-0b0c0d0e0f10"
    clients = {ADMIN_CN, A, B, in_step, half}
    roles = {"onboarding-admin", f"device-{A}", f"device-{B}", f"device-{in_step}", f"rules-{A}"}
    found = suspects(clients, roles, active={A, in_step, new, half}, with_rules={A})
    # B was revoked, new has no client yet, half lost its role, A has rules to compare.
    assert found == {A, B, new, half}
    assert ADMIN_CN not in found and in_step not in found
