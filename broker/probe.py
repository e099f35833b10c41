"""A short mTLS connection to the broker, as a device would make, to prove it enforces the CA.

Two identities, made by `mosquitto_config`: a monitoring certificate that must be let in, and
a canary certificate, revoked at birth, that must be refused. The second proves the broker
has a current CRL loaded; a broker without one would let the canary in.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from django.conf import settings

from broker.address import BrokerAddress, probe_address
from pki.issuance import issue_certificate
from pki.keystore import keystore
from pki.models import Certificate, CertificatePurpose
from pki.profiles import DEVICE_PROFILE, KeyType
from pki.revocation import revoke_certificate

MONITOR = "monitor"
CANARY = "canary"
MONITOR_CN = "onboarding-monitor"
CANARY_CN = "onboarding-canary"
SYNC_CANARY_CN = "onboarding-sync-canary"


def _probe_key_passphrase() -> bytes:
    # The probe keys are no device's identity, but still never rest in plaintext.
    return base64.urlsafe_b64encode(hashlib.sha256(b"broker-probe:" + settings.SECRET_KEY.encode()).digest())


def _paths(name: str) -> tuple[Path, Path]:
    directory = Path(settings.BROKER_PROBE_DIR)
    return directory / f"{name}.crt", directory / f"{name}.key"


def probe_configured() -> bool:
    return all(path.exists() for name in (MONITOR, CANARY) for path in _paths(name))


def identity_files(name: str) -> tuple[Path, Path, bytes]:
    """Certificate path, encrypted key path and its passphrase, for the portal's own identities."""
    certificate_path, key_path = _paths(name)
    return certificate_path, key_path, _probe_key_passphrase()


def create_probe_identities(extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Issue the monitoring certificate and the canary (revoked at once), and any extra identity."""
    directory = Path(settings.BROKER_PROBE_DIR)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    wanted = ((MONITOR, MONITOR_CN), (CANARY, CANARY_CN), *extra)
    for name, common_name in wanted:
        if all(path.exists() for path in _paths(name)):
            continue
        issued = issue_certificate(
            common_name, key_type=KeyType.EC_P256, profile=DEVICE_PROFILE, purpose=CertificatePurpose.MONITOR
        )
        assert issued.private_key is not None
        certificate_path, key_path = _paths(name)
        certificate_path.write_text(issued.record.pem)
        key_path.write_bytes(
            issued.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(_probe_key_passphrase()),
            )
        )
        key_path.chmod(0o600)
        if name == CANARY:
            revoke_certificate(issued.record)


def _connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, 10 s keep-alive)."""
    client = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + struct.pack("!H", len(client)) + client
    return b"\x10" + bytes([len(variable)]) + variable


CONNECTED, REVOKED, REFUSED, UNREACHABLE = "connected", "revoked", "refused", "unreachable"


def connect_identity(name: str, host: str, port: int, timeout: float | None = None) -> str:
    """How the broker treats one of the portal's identities (see connect_outcome), waiting at most
    BROKER_TIMEOUT_SECONDS unless told otherwise."""
    certificate_path, key_path = _paths(name)
    wait = settings.BROKER_TIMEOUT_SECONDS if timeout is None else timeout
    return connect_outcome(certificate_path, key_path, name, host, port, wait)


def unreachable_reason(address: BrokerAddress, timeout: float | None = None) -> str | None:
    """Why nothing accepts a connection at this address ("Connection refused", "timed out"), for
    messages; None when something does."""
    wait = settings.BROKER_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        socket.create_connection((address.host, address.port), timeout=wait).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


def connect_outcome(
    certificate_path: Path, key_path: Path, name: str, host: str, port: int, timeout: float
) -> str:
    """How the broker treats this identity: CONNECTED, REVOKED (the TLS alert "certificate
    revoked": proof the broker checks a CRL listing it), REFUSED (any other refusal) or
    UNREACHABLE (no TLS session at all, or no answer within `timeout`: a frozen broker accepts
    the TCP connection and then says nothing, which proves nothing)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(keystore().certificate_path))
    context.load_cert_chain(str(certificate_path), str(key_path), password=_probe_key_passphrase())
    # TLS 1.2 checks the client certificate inside the handshake, so a revoked one fails there
    # with the broker's alert. Under TLS 1.3 the check comes after the handshake, and the alert
    # can be lost to a connection reset, which would prove nothing.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return UNREACHABLE
    try:
        with raw, context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(_connect_packet(f"{name}-probe"))
            answer = tls.recv(4)
            if len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0:
                tls.sendall(b"\xe0\x00")  # DISCONNECT
                return CONNECTED
            return REFUSED
    except ssl.SSLError as exc:
        return REVOKED if "REVOKED" in str(exc).upper() else REFUSED
    except TimeoutError:
        return UNREACHABLE
    except OSError:
        return REFUSED


@dataclass(frozen=True)
class SyncCanary:
    """A certificate revoked together with a device, to prove when the broker enforces that CRL.

    The broker refusing it means it has loaded a CRL at least as new as the device's revocation;
    the persistent canary cannot tell that, since it is on every CRL. Valid for a day, so it
    leaves the CRL soon; its key lives only in this object and a short-lived encrypted file.
    """

    record: Certificate
    certificate_pem: bytes
    key_pem: bytes


def issue_sync_canary() -> SyncCanary:
    issued = issue_certificate(
        SYNC_CANARY_CN,
        key_type=KeyType.EC_P256,
        profile=DEVICE_PROFILE,
        purpose=CertificatePurpose.MONITOR,
        validity_days=1,
    )
    assert issued.private_key is not None
    key_pem = issued.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(_probe_key_passphrase()),
    )
    return SyncCanary(record=issued.record, certificate_pem=issued.record.pem.encode(), key_pem=key_pem)


#: Tries in a row that reach nothing before the wait for a refusal gives up: a broker that is
#: reloading keeps its listener open, so "nothing listens" does not pass by waiting.
UNREACHABLE_TRIES = 3


def await_refusal(
    canary: SyncCanary, *, deadline_seconds: float = 5.0, interval: float = 0.01
) -> tuple[str, BrokerAddress]:
    """Try the canary until the broker refuses it as revoked (REVOKED), the deadline passes (the
    last outcome, CONNECTED or REFUSED), or nothing answers UNREACHABLE_TRIES times in a row
    (UNREACHABLE). Also returns the address tried."""
    address = probe_address()
    outcome, unreachable = UNREACHABLE, 0
    with tempfile.TemporaryDirectory(prefix="sync-canary-") as directory:
        certificate_path, key_path = Path(directory) / "canary.crt", Path(directory) / "canary.key"
        certificate_path.write_bytes(canary.certificate_pem)
        key_path.write_bytes(canary.key_pem)
        end = time.monotonic() + deadline_seconds
        while time.monotonic() < end:
            # Only the broker's own "certificate revoked" counts; an unreachable broker proves nothing.
            outcome = connect_outcome(
                certificate_path, key_path, "sync-canary", address.host, address.port,
                settings.BROKER_TIMEOUT_SECONDS,
            )  # fmt: skip
            unreachable = unreachable + 1 if outcome == UNREACHABLE else 0
            if outcome == REVOKED or unreachable >= UNREACHABLE_TRIES:
                break
            time.sleep(interval)
    return outcome, address


def wait_until_refused(canary: SyncCanary, *, deadline_seconds: float = 5.0, interval: float = 0.01) -> bool:
    """Try the canary until the broker refuses it (True) or the deadline passes (False)."""
    outcome, _address = await_refusal(canary, deadline_seconds=deadline_seconds, interval=interval)
    return outcome == REVOKED


@dataclass(frozen=True)
class ProbeResult:
    #: How the broker treated the monitoring identity (CONNECTED when healthy).
    monitor_outcome: str
    canary_refused: bool
    address: BrokerAddress
    #: Why nothing accepted a connection at the address (then monitor_outcome is UNREACHABLE).
    unreachable: str | None = None

    @property
    def monitor_connected(self) -> bool:
        return self.monitor_outcome == CONNECTED

    @property
    def healthy(self) -> bool:
        return self.monitor_connected and self.canary_refused


def probe_broker() -> ProbeResult:
    address = probe_address()
    unreachable = unreachable_reason(address)
    if unreachable is not None:
        # Nothing answers: the identities' tries would only add their timeouts.
        return ProbeResult(UNREACHABLE, canary_refused=False, address=address, unreachable=unreachable)
    monitor_outcome = connect_identity(MONITOR, address.host, address.port)
    canary_certificate, canary_key = _paths(CANARY)
    # The broker's alert can lose the race with the client's first bytes (a reset instead of
    # "certificate revoked"), so the canary gets three tries to show the alert itself; a broker
    # that does not answer at all gets one (each try would wait out BROKER_TIMEOUT_SECONDS).
    canary_refused = False
    for _ in range(3):
        outcome = connect_outcome(
            canary_certificate, canary_key, CANARY, address.host, address.port,
            settings.BROKER_TIMEOUT_SECONDS,
        )  # fmt: skip
        canary_refused = outcome == REVOKED
        if outcome in (REVOKED, UNREACHABLE):
            break
    return ProbeResult(monitor_outcome, canary_refused=canary_refused, address=address)
