"""Mosquitto's dynamic-security plugin: the commands that bring it in step, planned from plain values.

Pure: no paho, no database, no broker. It says what the plugin must hold (a client and a role per
active device, a rules role for a device with rules), reads the plugin's answers (`held`) and
plans the commands that make one device's state what the database says (`plan_device`). The
connection that sends them is `broker.dynsec_session`; the backend that drives both is
`broker.backends.dynsec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from broker.access import DYNSEC_ACL_TYPES, Access
from broker.acl import ExtraRule
from broker.rules import DEVICE_TOPIC_ROOT

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
ADMIN_CN = "onboarding-dynsec-admin"
ADMIN_ROLE = "onboarding-admin"
DEVICE_ROLE_PREFIX = "device-"
RULES_ROLE_PREFIX = "rules-"
DEVICE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DynsecError(Exception):
    pass


def initial_config() -> dict[str, Any]:
    """The plugin's first configuration: only the portal's administrator, nothing allowed by default."""
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            {"username": ADMIN_CN, "textname": "IoT onboarding portal", "roles": [{"rolename": ADMIN_ROLE}]}
        ],
        "groups": [],
        "roles": [
            {
                "rolename": ADMIN_ROLE,
                "acls": [
                    {"acltype": "publishClientSend", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                    {"acltype": "publishClientReceive", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                    {"acltype": "subscribePattern", "topic": f"{CONTROL_TOPIC}/#", "allow": True},
                ],
            }
        ],
    }


def device_role(device_id: str) -> dict[str, Any]:
    tree = f"{DEVICE_TOPIC_ROOT}/{device_id}/#"
    return {
        "rolename": DEVICE_ROLE_PREFIX + device_id,
        "acls": [
            {"acltype": acltype, "topic": tree, "allow": allow}
            for acltype, allow in DYNSEC_ACL_TYPES[Access.READWRITE]
        ],
    }


def rules_role(device_id: str, rules: list[ExtraRule]) -> dict[str, Any]:
    acls = [
        {"acltype": acltype, "topic": rule.topic_filter, "allow": allow, "priority": 1 if not allow else 0}
        for rule in rules
        for acltype, allow in DYNSEC_ACL_TYPES[rule.access]
    ]
    return {"rolename": RULES_ROLE_PREFIX + device_id, "acls": acls}


AclKey = tuple[str, str, bool, int]


@dataclass(frozen=True)
class Held:
    """What the broker holds for one device: its client's roles (None: no client) and the ACLs
    of those of the device's own roles (`device-<id>`, `rules-<id>`) that exist."""

    client_roles: frozenset[str] | None
    roles: dict[str, frozenset[AclKey]]


def acl_keys(acls: list[dict[str, Any]]) -> frozenset[AclKey]:
    """ACLs as comparable keys (the broker answers with the priority always set, 0 by default)."""
    return frozenset(
        (acl["acltype"], acl["topic"], bool(acl["allow"]), int(acl.get("priority", 0))) for acl in acls
    )


def role_names(device_id: str) -> tuple[str, str]:
    return DEVICE_ROLE_PREFIX + device_id, RULES_ROLE_PREFIX + device_id


def inspect(device_id: str) -> list[dict[str, Any]]:
    """The three read-only commands that tell what the broker holds for a device (`held`)."""
    device_role_name, rules_role_name = role_names(device_id)
    return [
        {"command": "getClient", "username": device_id},
        {"command": "getRole", "rolename": device_role_name},
        {"command": "getRole", "rolename": rules_role_name},
    ]


NOT_FOUND = {"Client not found", "Role not found"}


def held(answers: list[dict[str, Any]]) -> Held:
    """`Held` from the answers to `inspect`'s commands, in their order ("not found" is absence;
    any other error raises: a client the portal cannot see must not pass for a deleted one)."""
    failures = [
        answer["error"] for answer in answers if answer.get("error") and answer["error"] not in NOT_FOUND
    ]
    if failures:
        raise DynsecError("; ".join(failures))
    client_answer, *role_answers = answers
    client = client_answer.get("data", {}).get("client")
    roles = {
        answer["data"]["role"]["rolename"]: acl_keys(answer["data"]["role"].get("acls", []))
        for answer in role_answers
        if not answer.get("error")
    }
    client_roles = None if client is None else frozenset(role["rolename"] for role in client.get("roles", []))
    return Held(client_roles=client_roles, roles=roles)


def wanted_roles(device_id: str, active: bool, rules: list[ExtraRule]) -> list[dict[str, Any]]:
    """The roles an active device must hold, in the order of their priority (rules outrank)."""
    if not active:
        return []
    return [device_role(device_id)] + ([rules_role(device_id, rules)] if rules else [])


def plan_device(device_id: str, there: Held, active: bool, rules: list[ExtraRule]) -> list[dict[str, Any]]:
    """The commands that make what the broker holds for one device what the database says (pure).

    A revoked device loses its client: `deleteClient` ends its live session at once. Its roles
    grant nothing without a client, and each command makes Mosquitto 2.0's plugin rewrite its
    whole file, so they are left for the next full sync, which finds them without a client and
    deletes them. A role whose ACLs differ from the database is deleted and created again.
    """
    commands: list[dict[str, Any]] = []
    if not active and there.client_roles is not None:
        return [{"command": "deleteClient", "username": device_id}]
    wanted = {role["rolename"]: role for role in wanted_roles(device_id, active, rules)}
    created = set()
    for name, acls in sorted(there.roles.items()):
        if name not in wanted or acls != acl_keys(wanted[name]["acls"]):
            commands.append({"command": "deleteRole", "rolename": name})
    for name, role in wanted.items():
        if name not in there.roles or there.roles[name] != acl_keys(role["acls"]):
            commands.append({"command": "createRole", **role})
            created.add(name)
    if not active:
        return commands
    priorities = {name: 1 if name.startswith(RULES_ROLE_PREFIX) else 0 for name in wanted}
    if there.client_roles is None:
        roles = [{"rolename": name, "priority": priorities[name]} for name in wanted]
        commands.append({"command": "createClient", "username": device_id, "roles": roles})
        return commands
    for name in there.client_roles - set(wanted) - set(there.roles):
        # A role someone else gave the client (deleted roles of the device's own leave it anyway).
        commands.append({"command": "removeClientRole", "username": device_id, "rolename": name})
    for name in wanted:
        if name in created or name not in there.client_roles:
            commands.append(
                {
                    "command": "addClientRole",
                    "username": device_id,
                    "rolename": name,
                    "priority": priorities[name],
                }
            )
    return commands


def suspects(
    existing_clients: set[str], existing_roles: set[str], active: set[str], with_rules: set[str]
) -> set[str]:
    """The devices a full sync must look at closely: those whose client or roles, by name, are not
    what the database says, and every device with rules (their ACLs must be compared)."""
    clients = {name for name in existing_clients if DEVICE_ID.match(name)}
    device_roles, rules_roles = set(), set()
    for role in existing_roles:
        if role.startswith(DEVICE_ROLE_PREFIX):
            device_roles.add(role.removeprefix(DEVICE_ROLE_PREFIX))
        elif role.startswith(RULES_ROLE_PREFIX):
            rules_roles.add(role.removeprefix(RULES_ROLE_PREFIX))
    return (clients ^ active) | (device_roles ^ active) | rules_roles | (with_rules & active)
