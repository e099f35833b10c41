"""Where the broker is: one answer for bundles, the health probe, the revocation check and the
portal's dynamic-security session.

`mosquitto_config` records the listener it writes (`BrokerListener`, in the database, so every
portal host sees it). Settings, when set, override it: BROKER_PUBLIC_HOST/PORT for what devices
connect to (a NAT or load balancer in front of the broker), BROKER_PROBE_HOST/PORT for the
portal's own connections (which otherwise use the public address).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from broker.models import BrokerListener, BrokerSync

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8883


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def recorded_listener() -> BrokerListener | None:
    return BrokerListener.objects.order_by("-pk").first()


def public_address() -> BrokerAddress:
    """What devices connect to: BROKER_PUBLIC_*, else the recorded listener, else 127.0.0.1:8883."""
    recorded = recorded_listener()
    host = settings.BROKER_PUBLIC_HOST or (recorded.host if recorded else DEFAULT_HOST)
    port = settings.BROKER_PUBLIC_PORT or (recorded.port if recorded else DEFAULT_PORT)
    return BrokerAddress(host, port)


def probe_address() -> BrokerAddress:
    """What the portal connects to (probe, revocation check, dynamic-security commands)."""
    public = public_address()
    return BrokerAddress(settings.BROKER_PROBE_HOST or public.host, settings.BROKER_PROBE_PORT or public.port)


def pid_file() -> str:
    """Where Mosquitto writes its pid: MOSQUITTO_PID_FILE, else the pid_file `mosquitto_config`
    wrote into the configuration ("" when neither). A path on the host that ran the command: a
    broker elsewhere is reloaded through BROKER_RELOAD_COMMAND instead."""
    if settings.MOSQUITTO_PID_FILE:
        return str(settings.MOSQUITTO_PID_FILE)
    recorded = recorded_listener()
    return recorded.pid_file if recorded else ""


def broker_set_up() -> bool:
    """Whether a broker is meant to exist: `mosquitto_config` has written one, the portal has given
    one its files (a sync; also true of installations older than the recorded listener), or
    settings name one (an address or a way to reload it). Before that, on a fresh install,
    /health reports the broker `not_configured`."""
    named_by_settings = (
        settings.BROKER_PUBLIC_HOST,
        settings.BROKER_PUBLIC_PORT,
        settings.BROKER_PROBE_HOST,
        settings.BROKER_PROBE_PORT,
        settings.MOSQUITTO_PID_FILE,
        settings.BROKER_RELOAD_COMMAND,
    )
    return any(named_by_settings) or BrokerListener.objects.exists() or BrokerSync.objects.exists()
