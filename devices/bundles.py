"""The credential bundle: what a device maker flashes, as an AES-256 encrypted ZIP built in memory.

Pure functions of plain values: no database, no files. The device key exists only in memory
and inside the encrypted archive.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from dataclasses import dataclass
from typing import Any

import pyzipper

# 160 bits from the CSPRNG, written as base32 in groups of four: long enough to resist an
# offline attack on a leaked ZIP, short enough to type from a screen.
PASSWORD_BYTES = 20
PASSWORD_GROUP = 4


def new_bundle_password() -> str:
    encoded = base64.b32encode(secrets.token_bytes(PASSWORD_BYTES)).decode().rstrip("=")
    return "-".join(
        encoded[index : index + PASSWORD_GROUP] for index in range(0, len(encoded), PASSWORD_GROUP)
    )


@dataclass(frozen=True)
class BundleContents:
    device_id: str
    device_name: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    #: PKCS#8 PEM of a server-generated key; None when the device made its own key (CSR).
    private_key_pem: bytes | None
    broker_host: str
    broker_port: int
    topics: list[dict[str, str]]
    serial: str
    not_after: str


def device_settings(contents: BundleContents) -> dict[str, Any]:
    files = {"ca_certificate": "ca.crt", "certificate": "device.crt"}
    if contents.private_key_pem is not None:
        files["private_key"] = "device.key"
    return {
        "device_id": contents.device_id,
        "name": contents.device_name,
        "broker": {
            "host": contents.broker_host,
            "port": contents.broker_port,
            "tls": {"version": "TLSv1.2+", "client_certificate": True, **files},
            # The broker takes the certificate's CN (the device id) as the MQTT username.
            "client_id": contents.device_id,
            "username": contents.device_id,
        },
        "topics": contents.topics,
        "certificate": {"serial": contents.serial, "not_after": contents.not_after},
    }


def readme(contents: BundleContents) -> str:
    host, port, device_id = contents.broker_host, contents.broker_port, contents.device_id
    topic = f"devices/{device_id}/telemetry"
    key_note = (
        "device.key    the device's private key (PKCS#8 PEM). Keep it on the device only."
        if contents.private_key_pem is not None
        else "(no key)     this device made its own key; use the key that made its CSR as device.key."
    )
    return f"""Credentials for device {contents.device_name} ({device_id})

Files
  device.crt    the device certificate (CN = device id), valid until {contents.not_after}
  {key_note}
  ca.crt        the certificate authority that signed it; the broker trusts it
  device.json   connection settings for firmware and scripts

Broker: {host}:{port}, MQTT over TLS with this client certificate (mutual TLS).
The device may publish and subscribe below devices/{device_id}/ and nowhere else.
The broker names the session after the certificate: its MQTT client id is always
{device_id}, whatever client id is sent.

Try it with mosquitto_pub (package mosquitto-clients):

  mosquitto_pub -h {host} -p {port} --cafile ca.crt --cert device.crt --key device.key \\
      -i {device_id} -t {topic} -m "hello"

And with Python (pip install paho-mqtt):

  import ssl
  import paho.mqtt.client as mqtt

  client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="{device_id}",
                       protocol=mqtt.MQTTv5)
  client.tls_set(ca_certs="ca.crt", certfile="device.crt", keyfile="device.key",
                 tls_version=ssl.PROTOCOL_TLS_CLIENT)
  client.connect("{host}", {port})
  client.loop_start()
  client.publish("{topic}", "hello", qos=1).wait_for_publish()
  client.loop_stop()
  client.disconnect()
"""


def build_bundle(contents: BundleContents, password: str) -> bytes:
    """The encrypted ZIP (WinZip AES-256), built entirely in memory."""
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(
        buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(password.encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256)
        if contents.private_key_pem is not None:
            archive.writestr("device.key", contents.private_key_pem)
        archive.writestr("device.crt", contents.certificate_pem)
        archive.writestr("ca.crt", contents.ca_certificate_pem)
        archive.writestr("device.json", json.dumps(device_settings(contents), indent=2) + "\n")
        archive.writestr("README.txt", readme(contents))
    return buffer.getvalue()
