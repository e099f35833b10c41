"""The broker enforces what the portal decides: a real Mosquitto and a real MQTT client over mTLS."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rest_framework.test import APIClient

from broker import acl_rules, crl_copy
from broker.backends import acl as acl_backend
from broker.backends.dynsec import MosquittoDynsecBackend
from broker.errors import BrokerSyncError
from broker.sync import reload_broker, sync_broker
from devices.models import Device
from pki.crl import crl_path
from pki.keystore import get_ca
from pki.profiles import CertificateRequest, build_ca_certificate, end_entity_builder
from tests.support.mosquitto import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Broker,
    Credentials,
    DeviceClient,
    credentials_from_answer,
    new_device,
)

ENFORCEMENT_DEADLINE = 1.0  # seconds from the revoke call returning to the live session losing access


def connected(broker: Broker, credentials: Credentials) -> DeviceClient:
    client = DeviceClient(broker, credentials)
    assert client.connect(), broker.log()
    return client


def write_key_and_certificate(
    directory: Path, key: Any, certificate: x509.Certificate, ca_pem: bytes
) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "device.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (directory / "device.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.crt").write_bytes(ca_pem)
    return Credentials(device_id="a5d1c7e2-0000-4000-8000-000000000001", directory=directory)


def test_device_uses_its_own_topics(mosquitto: Broker, operator_api: APIClient, tmp_path: Path) -> None:
    device = new_device(operator_api, tmp_path, "thermostat")
    client = connected(mosquitto, device)
    topic = f"devices/{device.device_id}/telemetry"
    client.subscribe(f"devices/{device.device_id}/#")
    assert client.publish(topic, b"21.5") in ACCEPTED
    assert client.next_message(timeout=5) == (topic, b"21.5")
    client.close()


def test_device_cannot_reach_another_devices_topics(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    alice = connected(mosquitto, new_device(operator_api, tmp_path, "alice"))
    bob_credentials = new_device(operator_api, tmp_path, "bob")
    bob = connected(mosquitto, bob_credentials)
    bobs_topic = f"devices/{bob_credentials.device_id}/commands"
    # Publishing into another device's tree: MQTT v5 PUBACK 0x87 "not authorized".
    assert alice.publish(bobs_topic) == NOT_AUTHORIZED
    # Listening to another device's tree: nothing is delivered.
    alice.subscribe(f"devices/{bob_credentials.device_id}/#")
    assert bob.publish(bobs_topic, b"secret") in ACCEPTED
    assert alice.next_message(timeout=1.0) is None
    # Nor anything outside the device tree.
    assert alice.publish("factory/everyone") == NOT_AUTHORIZED
    alice.close()
    bob.close()


def test_connections_without_a_valid_certificate_are_refused(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    import socket
    import ssl

    # No client certificate at all: the broker ends the TLS session before any CONNACK.
    context = ssl.create_default_context(cafile=str(mosquitto.ca_file))
    answer = b""
    try:
        with (
            socket.create_connection(("127.0.0.1", mosquitto.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00")
            answer = tls.recv(4)
    except (ssl.SSLError, OSError):
        answer = b""
    assert answer == b""

    # A certificate from another CA.
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    foreign_ca = build_ca_certificate(
        foreign_key, common_name="Foreign", not_before=now, not_after=now + dt.timedelta(days=9), serial=7
    )
    device_key = ec.generate_private_key(ec.SECP256R1())
    request = CertificateRequest(
        common_name="a5d1c7e2-0000-4000-8000-000000000001",
        public_key=device_key.public_key(),
        serial=x509.random_serial_number(),
        not_before=now,
        not_after=now + dt.timedelta(days=5),
        crl_url="http://localhost/ca.crl",
    )
    foreign = end_entity_builder(request, foreign_ca).sign(foreign_key, hashes.SHA256())
    credentials = write_key_and_certificate(
        tmp_path / "foreign", device_key, foreign, mosquitto.ca_file.read_bytes()
    )
    assert not DeviceClient(mosquitto, credentials).connect()

    # An expired certificate from our own CA.
    authority = get_ca()
    expired_request = CertificateRequest(
        common_name="a5d1c7e2-0000-4000-8000-000000000001",
        public_key=device_key.public_key(),
        serial=x509.random_serial_number(),
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
        crl_url="http://localhost/ca.crl",
    )
    expired = end_entity_builder(expired_request, authority.certificate).sign(
        authority.private_key, hashes.SHA256()
    )
    credentials = write_key_and_certificate(
        tmp_path / "expired", device_key, expired, mosquitto.ca_file.read_bytes()
    )
    assert not DeviceClient(mosquitto, credentials).connect()


def test_revocation_cuts_the_live_session_and_refuses_reconnection(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any
) -> None:
    device = new_device(operator_api, tmp_path, "stolen")
    bystander_credentials = new_device(operator_api, tmp_path, "bystander")
    live = connected(mosquitto, device)
    bystander = connected(mosquitto, bystander_credentials)
    topic = f"devices/{device.device_id}/telemetry"
    assert live.publish(topic) in ACCEPTED

    response = operator_api.post(f"/revoke/{device.device_id}", {"reason": "keyCompromise"}, format="json")
    returned = time.monotonic()
    assert response.status_code == 200
    assert response.json()["revocation_enforced_at"] is not None

    # The live session loses its topics within the deadline.
    # ACL backend: the session stays, but PUBACK says 0x87. Dynamic security: the session is cut.
    denied_after = None
    while time.monotonic() - returned < ENFORCEMENT_DEADLINE + 1:
        if live.disconnected.is_set() or live.publish_or_none(topic, timeout=0.5) == NOT_AUTHORIZED:
            denied_after = time.monotonic() - returned
            break
        time.sleep(0.02)
    assert denied_after is not None and denied_after <= ENFORCEMENT_DEADLINE, denied_after
    if settings.BROKER_BACKEND == "mosquitto_dynsec":
        assert live.disconnected.is_set()  # deleteClient ends the live session itself
    live.close()

    # A new connection with the revoked certificate is refused.
    assert not DeviceClient(mosquitto, device).connect()
    # Other devices carry on.
    assert bystander.publish(f"devices/{bystander_credentials.device_id}/telemetry") in ACCEPTED
    bystander.close()
    assert Device.objects.get(pk=device.device_id).revocation_enforced_at is not None


def test_reissued_device_keeps_its_topics_and_the_old_certificate_is_refused(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    old = new_device(operator_api, tmp_path, "rotating")
    answer = operator_api.post(f"/api/v1/devices/{old.device_id}/reissue", {}, format="json").json()
    new = credentials_from_answer(operator_api, answer, tmp_path / "rotated")
    client = connected(mosquitto, new)
    assert client.publish(f"devices/{new.device_id}/telemetry") in ACCEPTED
    client.close()
    assert not DeviceClient(mosquitto, old).connect()


def test_damaged_crl_is_never_given_to_the_broker(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any
) -> None:
    device = new_device(operator_api, tmp_path, "revoked-first")
    operator_api.post(f"/revoke/{device.device_id}", {}, format="json")
    broker_crl = Path(settings.BROKER_CRL_FILE).read_bytes()
    good = crl_path().read_bytes()
    crl_path().write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    try:
        with pytest.raises(BrokerSyncError, match="keeps its previous CRL"):
            sync_broker()
        assert Path(settings.BROKER_CRL_FILE).read_bytes() == broker_crl
        reload_broker()
        time.sleep(0.2)
        # Still enforced: the broker kept the good CRL.
        assert not DeviceClient(mosquitto, device).connect()
    finally:
        crl_path().write_bytes(good)


@pytest.mark.parametrize("mosquitto", ["mosquitto_acl"], indirect=True)
def test_invalid_acl_is_never_written(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = new_device(operator_api, tmp_path, "guarded")
    before = Path(settings.BROKER_ACL_FILE).read_bytes()
    monkeypatch.setattr(acl_backend, "render_acl", lambda revoked, rules: "pattern readwrite #\n")
    with pytest.raises(BrokerSyncError, match="failed its check"):
        sync_broker()
    assert Path(settings.BROKER_ACL_FILE).read_bytes() == before
    client = connected(mosquitto, device)
    assert client.publish("devices/someone-else/x") == NOT_AUTHORIZED
    client.close()


def test_failed_write_leaves_the_previous_files(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    new_device(operator_api, tmp_path, "first")
    before = Path(settings.BROKER_CRL_FILE).read_bytes()

    def disk_full(path: Path, data: bytes, mode: int = 0o644) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(crl_copy, "write_atomically", disk_full)
    device = new_device(operator_api, tmp_path, "second")
    response = operator_api.post(f"/revoke/{device.device_id}", {}, format="json")
    # The revocation stands (database and CA CRL); the broker could not be told, and says so.
    assert response.status_code == 200
    assert response.json()["revocation_enforced_at"] is None
    assert Path(settings.BROKER_CRL_FILE).read_bytes() == before
    monkeypatch.undo()
    assert APIClient().get("/health").json()["checks"]["broker"]["status"] == "fail"
    sync_broker()
    time.sleep(0.5)
    assert not DeviceClient(mosquitto, device).connect(), mosquitto.log()


def test_health_probe_sees_the_broker_enforce_the_crl(mosquitto: Broker, settings: Any) -> None:
    body = APIClient().get("/health").json()
    assert body["checks"]["broker"] == {"status": "ok", "probe": "monitor connected, revoked canary refused"}
    stop_time = time.monotonic()
    mosquitto.process.terminate()
    mosquitto.process.wait(timeout=10)
    response = APIClient().get("/health")
    assert response.status_code == 503 and "broker" in response.json()["failed"]
    assert time.monotonic() - stop_time < 15


@pytest.mark.parametrize("mosquitto", ["mosquitto_acl"], indirect=True)
def test_broker_sync_check_reports_drift(mosquitto: Broker, settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = StringIO()
    call_command("broker_sync", "--check", stdout=out)
    assert "has what the database says" in out.getvalue()
    Path(settings.BROKER_ACL_FILE).write_text("pattern readwrite #\n")
    with pytest.raises(CommandError, match="out of step"):
        call_command("broker_sync", "--check")
    call_command("broker_sync", stdout=out)
    assert "reloaded" in out.getvalue()
    call_command("broker_sync", "--check", stdout=out)


def test_extra_rules_are_enforced(mosquitto: Broker, operator_api: APIClient, tmp_path: Path) -> None:
    from broker.acl_rules import InvalidAclRule, add_acl_rule

    announcer_credentials = new_device(operator_api, tmp_path, "announcer")
    listener_credentials = new_device(operator_api, tmp_path, "listener")
    add_acl_rule(announcer_credentials.device_id, "fleet/announcements", "write")
    add_acl_rule(listener_credentials.device_id, "fleet/announcements", "read")
    with pytest.raises(InvalidAclRule, match="mark the rule shared"):
        add_acl_rule(listener_credentials.device_id, f"devices/{announcer_credentials.device_id}/#", "read")
    with pytest.raises(InvalidAclRule, match="whole last level"):
        add_acl_rule(listener_credentials.device_id, "fleet/#/x", "read")
    announcer = connected(mosquitto, announcer_credentials)
    listener = connected(mosquitto, listener_credentials)
    # SIGHUP is asynchronous: wait (briefly) until the broker applies the new rules.
    deadline = time.monotonic() + 3
    while announcer.publish("fleet/announcements", b"warm-up") not in ACCEPTED:
        assert time.monotonic() < deadline, "the broker never applied the new rule"
        time.sleep(0.02)
    listener.subscribe("fleet/announcements")
    assert announcer.publish("fleet/announcements", b"maintenance at 02:00") in ACCEPTED
    assert listener.next_message(timeout=5) == ("fleet/announcements", b"maintenance at 02:00")
    assert listener.publish("fleet/announcements") == NOT_AUTHORIZED
    announcer.close()
    listener.close()


def test_mosquitto_config_writes_a_complete_reusable_configuration(
    mosquitto: Broker, settings: Any, tmp_path: Path
) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    from tests.support.helpers import lint_certificate_file, openssl_verify

    conf = (mosquitto.directory / "mosquitto.conf").read_text()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        "set_tcp_nodelay true",
        "require_certificate true",
        "use_identity_as_username true",
        f"crlfile {settings.BROKER_CRL_FILE}",
        f"acl_file {settings.BROKER_ACL_FILE}"
        if settings.BROKER_BACKEND == "mosquitto_acl"
        else "plugin_opt_config_file " + str(mosquitto.directory / "dynamic-security.json"),
        f"pid_file {settings.MOSQUITTO_PID_FILE}",
        f"listener {mosquitto.port} 127.0.0.1",
    ):
        assert line in conf.splitlines(), line
    server = mosquitto.directory / "server.crt"
    assert lint_certificate_file(server).returncode == 0
    verify = openssl_verify(mosquitto.ca_file, server, "-purpose", "sslserver", "-verify_ip", "127.0.0.1")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (mosquitto.directory / "server.key").stat().st_mode & 0o777 == 0o600

    before = server.read_bytes()
    call_command("mosquitto_config", "--out", str(mosquitto.directory), "--port", str(mosquitto.port),
                 "--bind", "127.0.0.1", stdout=StringIO())  # fmt: skip
    assert server.read_bytes() == before  # same names, far from expiry: reused
    call_command("mosquitto_config", "--out", str(mosquitto.directory), "--port", str(mosquitto.port),
                 "--hostname", "mqtt.factory.example", stdout=StringIO())  # fmt: skip
    renewed = x509.load_pem_x509_certificate(server.read_bytes())
    names = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.factory.example"]
    with pytest.raises(CommandError, match="not a fully qualified host name"):
        call_command("mosquitto_config", "--out", str(tmp_path / "other"), "--hostname", "localhost")


def test_a_rule_the_broker_cannot_take_is_not_kept(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from broker.acl_rules import add_acl_rule
    from broker.models import AclRule

    device = new_device(operator_api, tmp_path, "ruled")

    def broken_sync(**kwargs: Any) -> None:
        raise BrokerSyncError("the broker files could not be written")

    monkeypatch.setattr(acl_rules, "sync_broker", broken_sync)
    with pytest.raises(BrokerSyncError):
        add_acl_rule(device.device_id, "fleet/announcements", "read")
    assert not AclRule.objects.exists()


def test_an_unreachable_broker_proves_no_enforcement(mosquitto: Broker, operator_api: APIClient) -> None:
    from broker.probe import issue_sync_canary, wait_until_refused
    from pki.revocation import revoke_certificate

    canary = issue_sync_canary()
    revoke_certificate(canary.record)
    sync_broker()
    assert wait_until_refused(canary, deadline_seconds=3)
    mosquitto.process.terminate()
    mosquitto.process.wait(timeout=10)
    assert not wait_until_refused(canary, deadline_seconds=0.5)


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_dynsec_drift_is_reported_and_repaired(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    device = new_device(operator_api, tmp_path, "drifting")
    call_command("broker_sync", "--check", stdout=StringIO())
    # Someone removes the device's client behind the portal's back.
    with MosquittoDynsecBackend()._session() as session:
        session.run([{"command": "deleteClient", "username": device.device_id}])
    with pytest.raises(CommandError, match="1 missing"):
        call_command("broker_sync", "--check")
    call_command("broker_sync", stdout=StringIO())
    call_command("broker_sync", "--check", stdout=StringIO())
    client = connected(mosquitto, device)
    assert client.publish(f"devices/{device.device_id}/x") in ACCEPTED
    client.close()


def test_rules_changed_in_the_admin_reach_the_broker(
    mosquitto: Broker,
    operator_api: APIClient,
    tmp_path: Path,
    make_user: Any,
    verified_login: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """Added, moved to another device and deleted (the admin's bulk action) through the admin;
    the broker is told once the admin's transaction has committed."""
    from broker.models import AclRule
    from tests.support.portal import signed_in

    signed_in_client = signed_in(make_user, verified_login, None, "root", is_staff=True, is_superuser=True)

    def admin_post(path: str, data: dict[str, Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = signed_in_client.post(path, data)
        assert response.status_code != 302 or callbacks, "no broker push after the commit"
        return response

    first_credentials = new_device(operator_api, tmp_path, "first")
    second_credentials = new_device(operator_api, tmp_path, "second")
    form = {"access": "write", "topic_filter": "fleet/status", "shared": ""}
    added = admin_post("/admin/broker/aclrule/add/", {**form, "device": first_credentials.device_id})
    assert added.status_code == 302
    rule = AclRule.objects.get()

    def outcome(credentials: Credentials) -> int | None:
        """What publishing to fleet/status gives, on a fresh connection (a dynamic-security role
        change may end the device's session)."""
        client = connected(mosquitto, credentials)
        try:
            return client.publish_or_none("fleet/status", timeout=2)
        finally:
            client.close()

    def settles(credentials: Credentials, accepted: bool) -> bool:
        # SIGHUP is asynchronous: give the broker a moment to apply the new ACL file.
        deadline = time.monotonic() + 3
        while ((outcome(credentials) in ACCEPTED) != accepted) and time.monotonic() < deadline:
            time.sleep(0.05)
        return (outcome(credentials) in ACCEPTED) == accepted

    assert settles(first_credentials, accepted=True)
    assert settles(second_credentials, accepted=False)

    moved = admin_post(
        f"/admin/broker/aclrule/{rule.pk}/change/", {**form, "device": second_credentials.device_id}
    )
    assert moved.status_code == 302
    assert settles(first_credentials, accepted=False)  # the device it left loses it
    assert settles(second_credentials, accepted=True)

    deleted = admin_post(
        "/admin/broker/aclrule/",
        {"action": "delete_selected", "_selected_action": [str(rule.pk)], "post": "yes"},
    )
    assert deleted.status_code == 302 and not AclRule.objects.exists()
    assert settles(second_credentials, accepted=False)


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_dynsec_a_change_touches_only_its_devices_and_needs_no_reload(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    """A registration sends commands for the new device alone: the broker is not listed, other
    devices are not looked at (a drifted one stays drifted until the full sync) and, with the
    CRL unchanged, the broker is not reloaded."""
    from io import StringIO

    from django.core.management import call_command

    from broker.models import BrokerSync

    drifted = new_device(operator_api, tmp_path, "drifted")
    with MosquittoDynsecBackend()._session() as session:
        session.run([{"command": "deleteClient", "username": drifted.device_id}])
    reloads_before = mosquitto.log().count("Reloading config")
    newcomer = new_device(operator_api, tmp_path, "newcomer")

    change = BrokerSync.objects.order_by("-pk").first()
    assert change is not None
    assert (change.changed_devices, change.revoked_devices, change.reloaded) == (1, 0, True)
    client = connected(mosquitto, newcomer)
    assert client.publish(f"devices/{newcomer.device_id}/x") in ACCEPTED
    client.close()
    with MosquittoDynsecBackend()._session() as session:
        answer = session.run([{"command": "getClient", "username": drifted.device_id}], check=False)
    assert answer[0]["error"] == "Client not found"  # not repaired by somebody else's change
    assert mosquitto.log().count("Reloading config") == reloads_before

    # A revocation deletes the client (one command); the role, inert without it, stays.
    assert operator_api.post(f"/revoke/{newcomer.device_id}").status_code == 200
    role = f"device-{newcomer.device_id}"
    with MosquittoDynsecBackend()._session() as session:
        client_answer, role_answer = session.run(
            [
                {"command": "getClient", "username": newcomer.device_id},
                {"command": "getRole", "rolename": role},
            ],
            check=False,
        )
    assert client_answer["error"] == "Client not found" and "error" not in role_answer

    call_command("broker_sync", stdout=StringIO())  # the full sync repairs the drift, tidies the role
    with MosquittoDynsecBackend()._session() as session:
        (role_answer,) = session.run([{"command": "getRole", "rolename": role}], check=False)
    assert role_answer["error"] == "Role not found"
    full = BrokerSync.objects.order_by("-pk").first()
    assert full is not None and full.changed_devices is None
    deadline = time.monotonic() + 3  # and reloads (SIGHUP): the broker logs it
    while mosquitto.log().count("Reloading config") == reloads_before:
        assert time.monotonic() < deadline, mosquitto.log()
        time.sleep(0.02)
    client = connected(mosquitto, drifted)
    assert client.publish(f"devices/{drifted.device_id}/x") in ACCEPTED
    client.close()


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_dynsec_what_the_portal_creates_reads_back_as_in_step(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    """The broker's real getClient/getRole answers, for a device with rules, plan no command:
    a change does not delete and create roles that are already right."""
    from broker import dynsec_plan
    from broker.acl_rules import add_acl_rule
    from broker.state import extra_rules

    device = new_device(operator_api, tmp_path, "ruled")
    add_acl_rule(device.device_id, "fleet/status", "write")
    add_acl_rule(device.device_id, "fleet/commands", "read")
    rules = extra_rules(among=[device.device_id])
    with MosquittoDynsecBackend()._session() as session:
        there = dynsec_plan.held(session.run(dynsec_plan.inspect(device.device_id), check=False))
    assert there.client_roles == frozenset({f"device-{device.device_id}", f"rules-{device.device_id}"})
    assert dynsec_plan.plan_device(device.device_id, there, True, rules) == []


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_dynsec_a_change_the_broker_missed_goes_with_the_next_one(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path
) -> None:
    """In-process: a revocation while the broker is down stays pending, and the next change
    (any device) gives it to the broker once it is back."""
    from broker.models import PendingChange
    from tests.support.mosquitto import start_mosquitto, stop_mosquitto

    doomed = new_device(operator_api, tmp_path, "doomed")
    stop_mosquitto(mosquitto)
    assert operator_api.post(f"/revoke/{doomed.device_id}").status_code == 200  # stands in the database
    assert list(PendingChange.objects.values_list("device_id", flat=True)) == [doomed.device_id]

    restarted = start_mosquitto(mosquitto.directory, mosquitto.port)
    mosquitto.process = restarted.process  # the fixture stops this one
    newcomer = new_device(operator_api, tmp_path, "newcomer")  # a change of another device
    assert not PendingChange.objects.exists()
    with MosquittoDynsecBackend()._session() as session:
        (answer,) = session.run([{"command": "getClient", "username": doomed.device_id}], check=False)
    assert answer["error"] == "Client not found"
    assert not DeviceClient(mosquitto, doomed).connect()
    client = connected(mosquitto, newcomer)
    assert client.publish(f"devices/{newcomer.device_id}/x") in ACCEPTED
    client.close()


@pytest.mark.parametrize("mosquitto", ["mosquitto_dynsec"], indirect=True)
def test_dynsec_a_crl_copied_but_never_loaded_is_reloaded_by_the_next_change(
    mosquitto: Broker, operator_api: APIClient, tmp_path: Path, settings: Any
) -> None:
    pid_file = settings.MOSQUITTO_PID_FILE
    doomed = new_device(operator_api, tmp_path, "doomed")
    settings.MOSQUITTO_PID_FILE = str(tmp_path / "no-such.pid")  # the reload fails after the copy
    assert operator_api.post(f"/revoke/{doomed.device_id}").status_code == 200
    assert Path(settings.BROKER_CRL_FILE).read_bytes() == crl_path().read_bytes()
    reloads = mosquitto.log().count("Reloading config")

    settings.MOSQUITTO_PID_FILE = pid_file
    new_device(operator_api, tmp_path, "newcomer")  # no new CRL, yet the broker must reload
    deadline = time.monotonic() + 3
    while mosquitto.log().count("Reloading config") == reloads:
        assert time.monotonic() < deadline, "the broker was not reloaded"
        time.sleep(0.02)
    deadline = time.monotonic() + 3
    while DeviceClient(mosquitto, doomed).connect():
        assert time.monotonic() < deadline, "the revoked certificate is still let in"
        time.sleep(0.05)


def test_the_broker_names_the_revoked_state_as_the_devices_app_does() -> None:
    """broker.dispatch finds unproven revocations by the status value, without importing devices."""
    from broker import dispatch
    from devices.models import DeviceStatus

    assert DeviceStatus.REVOKED.value == dispatch.REVOKED
