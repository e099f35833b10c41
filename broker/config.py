"""mosquitto.conf for the portal's broker: rendered from plain values (no Django)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BrokerConfig:
    port: int
    ca_file: Path
    certificate_file: Path
    key_file: Path
    crl_file: Path
    acl_file: Path
    #: Mosquitto started as root switches to this user; "root" keeps it root.
    user: str
    bind_address: str | None = None
    pid_file: str | None = None
    #: With the dynamic-security plugin, its library and configuration file replace acl_file.
    dynsec_plugin: str | None = None
    dynsec_config: Path | None = None


def render_mosquitto_conf(config: BrokerConfig) -> str:
    lines = [
        "# Written by `python manage.py mosquitto_config`. Rewrite it with that command.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"user {config.user}",
        "persistence false",
        # Nagle's algorithm delays the small records of an mTLS connect and publish (docs/benchmarks.md).
        "set_tcp_nodelay true",
    ]
    if config.pid_file:
        lines.append(f"pid_file {config.pid_file}")
    listener = f"listener {config.port}" + (f" {config.bind_address}" if config.bind_address else "")
    lines += [
        "",
        "# Mutual TLS: a device proves itself with its certificate; its CN (the device id) is its username.",
        listener,
        "protocol mqtt",
        f"cafile {config.ca_file}",
        f"certfile {config.certificate_file}",
        f"keyfile {config.key_file}",
        f"crlfile {config.crl_file}",
        "require_certificate true",
        "use_identity_as_username true",
        # The client id becomes the certificate's CN too: a device presenting its own certificate
        # with another device's client id would otherwise take over (end) that device's session.
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
        "",
    ]
    if config.dynsec_plugin:
        lines += [
            "# Topic rights: one client and role per device, managed by the portal through $CONTROL.",
            f"plugin {config.dynsec_plugin}",
            f"plugin_opt_config_file {config.dynsec_config}",
            "",
        ]
    else:
        lines += [
            "# Topic rights, rewritten by the portal on every change; SIGHUP reloads it and the CRL.",
            f"acl_file {config.acl_file}",
            "",
        ]
    return "\n".join(lines)
