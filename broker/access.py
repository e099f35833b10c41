"""The MQTT access a rule gives, defined once: the values stored and accepted by the API, and
what each one is on the broker (a Mosquitto ACL keyword, dynamic-security ACL types).

Pure: plain values, no database, no broker.
"""

from __future__ import annotations

from django.db import models


class Access(models.TextChoices):
    READ = "read", "Read (subscribe)"
    WRITE = "write", "Write (publish)"
    READWRITE = "readwrite", "Read and write"
    DENY = "deny", "Deny"


#: The Mosquitto ACL keyword of each access (`topic <keyword> <filter>`): the value itself.
MOSQUITTO_KEYWORDS: tuple[str, ...] = tuple(Access.values)

#: Each access as the dynamic-security plugin's ACL types: (acltype, allow).
DYNSEC_ACL_TYPES: dict[str, list[tuple[str, bool]]] = {
    Access.READ: [("subscribePattern", True), ("publishClientReceive", True)],
    Access.WRITE: [("publishClientSend", True)],
    Access.READWRITE: [
        ("subscribePattern", True),
        ("publishClientReceive", True),
        ("publishClientSend", True),
    ],
    Access.DENY: [("subscribePattern", False), ("publishClientReceive", False), ("publishClientSend", False)],
}
