"""Topic rights beyond a device's own tree: validated, kept, and given to the broker at once."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from broker.models import AclRule
from broker.sync import sync_broker
from kernel.errors import ServiceError


class InvalidAclRule(ServiceError):
    code = "invalid_rule"
    status = 400


def add_acl_rule(device_id: str, topic_filter: str, access: str, *, shared: bool = False) -> AclRule:
    """Give a device a right beyond its own tree, validated, and push it to the broker."""
    rule = AclRule(device_id=device_id, topic_filter=topic_filter, access=access, shared=shared)
    try:
        rule.full_clean()
    except ValidationError as exc:
        messages = "; ".join(message for messages in exc.message_dict.values() for message in messages)
        raise InvalidAclRule(messages) from None
    with transaction.atomic():
        rule.save()
        sync_broker(devices=[device_id])  # a rule the broker cannot be given is not kept
    return rule
