"""BROKER_BACKEND goes through one registry (broker.backends): today's names, or the dotted path
of a backend class, loaded with import_string. The system check broker.E001 uses the same
registry, so whatever the registry refuses stops `check` (tests/project/test_settings.py runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from broker.backends import BACKENDS, backend_class, get_backend
from broker.backends.acl import MosquittoAclBackend
from broker.backends.dynsec import MosquittoDynsecBackend
from broker.checks import check_broker_backend
from broker.errors import BrokerSyncError


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("mosquitto_acl", MosquittoAclBackend),
        ("mosquitto_dynsec", MosquittoDynsecBackend),
        ("broker.backends.acl.MosquittoAclBackend", MosquittoAclBackend),
        ("broker.backends.dynsec.MosquittoDynsecBackend", MosquittoDynsecBackend),
    ],
)
def test_a_name_or_a_dotted_path_loads_its_backend(setting: str, expected: type, settings: Any) -> None:
    settings.BROKER_BACKEND = setting
    assert backend_class(setting) is expected
    assert type(get_backend()) is expected
    assert check_broker_backend() == []


def test_every_name_is_the_backend_of_that_name() -> None:
    """The name a sync records (BrokerSync.backend) is the name BROKER_BACKEND uses."""
    assert {name: backend_class(name).name for name in BACKENDS} == {name: name for name in BACKENDS}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("mosquito_acl", "BROKER_BACKEND 'mosquito_acl' is not one of: mosquitto_acl, mosquitto_dynsec."),
        ("broker.backends.acl.NoSuchBackend", "BROKER_BACKEND 'broker.backends.acl.NoSuchBackend' cannot be"),
        (
            "broker.backends.cluster.ClusterBackend",
            "BROKER_BACKEND 'broker.backends.cluster.ClusterBackend' cannot",
        ),
        ("broker.models.AclRule", "BROKER_BACKEND 'broker.models.AclRule' is not a broker backend"),
        (
            "broker.backends.BrokerBackend",
            "BROKER_BACKEND 'broker.backends.BrokerBackend' is not a broker backend",
        ),
        ("broker.backends.BACKENDS", "BROKER_BACKEND 'broker.backends.BACKENDS' is not a broker backend"),
    ],
)
def test_what_the_registry_refuses_the_check_reports(setting: str, message: str, settings: Any) -> None:
    settings.BROKER_BACKEND = setting
    with pytest.raises(BrokerSyncError) as raised:
        get_backend()
    assert raised.value.message.startswith(message)
    [error] = check_broker_backend()
    assert error.id == "broker.E001" and error.msg == raised.value.message


def test_mosquitto_config_knows_a_backend_given_by_its_dotted_path(settings: Any, tmp_path: Path) -> None:
    """`mosquitto_config --backend` takes names: a dotted BROKER_BACKEND is compared by its backend's
    name, and one that does not load is one clear line."""
    settings.BROKER_BACKEND = "broker.backends.acl.MosquittoAclBackend"
    with pytest.raises(CommandError, match="--backend mosquitto_dynsec differs from BROKER_BACKEND"):
        call_command("mosquitto_config", "--out", str(tmp_path), "--backend", "mosquitto_dynsec")
    settings.BROKER_BACKEND = "broker.backends.acl.NoSuchBackend"
    with pytest.raises(CommandError, match=r"'broker\.backends\.acl\.NoSuchBackend' cannot be imported"):
        call_command("mosquitto_config", "--out", str(tmp_path))
