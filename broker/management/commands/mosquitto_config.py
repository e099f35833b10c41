from __future__ import annotations

import getpass
import ipaddress
import json
import os
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from broker.address import public_address
from broker.backends import backend_class
from broker.backends.dynsec import DYNSEC_ADMIN, plugin_path
from broker.config import BrokerConfig, render_mosquitto_conf
from broker.crl_copy import copy_crl_to_broker
from broker.dynsec_plan import ADMIN_CN, initial_config
from broker.models import BrokerListener
from broker.probe import create_probe_identities
from broker.sync import sync_broker
from kernel.errors import ServiceError
from kernel.fs import write_atomically
from pki.keystore import get_ca
from pki.models import Certificate, CertificatePurpose
from pki.profiles import KeyType, RevocationReason
from pki.revocation import revoke_certificate
from pki.server_certificate import ensure_server_certificate

# Clients check the subjectAltName (RFC 6125); the CN only names the certificate for people.
BROKER_COMMON_NAME = "IoT onboarding MQTT broker"
LOOPBACK = ("127.0.0.1", "::1")


def _split_names(hostnames: list[str]) -> tuple[list[str], list[str]]:
    """DNS names for the SAN's dNSName entries, addresses (plus loopback) for iPAddress entries."""
    dns_names, addresses = [], list(LOOPBACK)
    for name in hostnames:
        try:
            address = str(ipaddress.ip_address(name))
        except ValueError:
            if name == "localhost" or "." not in name:
                raise CommandError(
                    f"'{name}' is not a fully qualified host name; use one (broker.example.com) or an IP "
                    "address (127.0.0.1 is always included)."
                ) from None
            dns_names.append(name.lower())
        else:
            if address not in addresses:
                addresses.append(address)
    return sorted(set(dns_names)), addresses


def _overridden(hostnames: list[str], port: int) -> list[str]:
    """Warnings for settings that send devices or the portal elsewhere than this listener (right
    behind a NAT or a load balancer, a mistake otherwise)."""
    found = []
    for name in ("BROKER_PUBLIC_HOST", "BROKER_PROBE_HOST"):
        value = getattr(settings, name)
        if value and value not in hostnames:
            found.append(
                f"Warning: {name}={value} is not among the broker certificate's names "
                f"({', '.join(hostnames)}); TLS clients going there will refuse the broker."
            )
    for name in ("BROKER_PUBLIC_PORT", "BROKER_PROBE_PORT"):
        value = getattr(settings, name)
        if value and value != port:
            found.append(
                f"Warning: {name}={value} overrides the port {port} written here; unset it unless "
                f"port {value} is forwarded to this listener."
            )
    return found


class Command(BaseCommand):
    help = "Write a ready Mosquitto configuration (mTLS listener, CA, CRL, ACL, server certificate) to DIR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--out", required=True, type=Path, help="directory for mosquitto.conf and TLS files"
        )
        parser.add_argument(
            "--hostname",
            action="append",
            default=None,
            help="host name or IP address of the broker for devices (repeatable; the first is what devices "
            "and the portal use; default: the broker's current address, 127.0.0.1 at first)",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="listener port (default: the broker's current port, 8883 at first)",
        )
        parser.add_argument("--bind", default=None, help="listen on this address only (default: all)")
        parser.add_argument(
            "--backend",
            choices=["mosquitto_acl", "mosquitto_dynsec"],
            default=None,
            help="default BROKER_BACKEND",
        )
        parser.add_argument(
            "--user",
            default=None,
            help="user Mosquitto runs as when started as root (default: the current user)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # BROKER_BACKEND may be a dotted path: the backend's name says which broker it needs.
        try:
            configured = backend_class(settings.BROKER_BACKEND).name
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        backend = options["backend"] or configured
        if backend != configured:
            raise CommandError(
                f"--backend {backend} differs from BROKER_BACKEND={settings.BROKER_BACKEND}; the portal "
                "must use the backend the broker is configured for (set BROKER_BACKEND)."
            )
        out: Path = options["out"].resolve()
        current = public_address()
        hostnames = options["hostname"] or [current.host]
        port = options["port"] or current.port
        if not 0 < port < 65536:
            raise CommandError(f"--port {port} is not a TCP port (1-65535).")
        user = options["user"] or getpass.getuser()
        # A pid file, recorded below, so that the portal can make this broker reload on the same
        # host with nothing more to set (MOSQUITTO_PID_FILE chooses another place). None where
        # BROKER_RELOAD_COMMAND reloads it: such a broker (another container) may have nowhere to
        # write one, and Mosquitto refuses to start when it cannot write its pid_file.
        pid_path: Path | None = None
        if settings.MOSQUITTO_PID_FILE or not settings.BROKER_RELOAD_COMMAND:
            pid_path = Path(settings.MOSQUITTO_PID_FILE or out / "mosquitto.pid")
        try:
            self._write(
                out,
                hostnames,
                port,
                options["bind"],
                user,
                pid_path,
                dynsec_mode=backend == "mosquitto_dynsec",
            )
            if backend == "mosquitto_acl":
                sync_broker(reload=False)
            else:
                copy_crl_to_broker()  # the broker needs its CRL to start; clients are synced once it runs
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(f"Could not write the broker configuration: {exc}.") from None
        # The portal's one record of where the broker is: bundles, the probe and the revocation
        # check read it (broker/address.py), unless BROKER_PUBLIC_*/BROKER_PROBE_* override it.
        BrokerListener.objects.create(
            host=hostnames[0],
            port=port,
            bind_address=options["bind"] or "",
            backend=backend,
            pid_file=str(pid_path or ""),
        )
        self.stdout.write(self.style.SUCCESS(f"Wrote {out / 'mosquitto.conf'} (port {port}, user {user})."))
        self.stdout.write(f"Devices will connect to {public_address()}.")
        for warning in _overridden(hostnames, port):
            self.stderr.write(warning)
        self.stdout.write(f"Start the broker with:  mosquitto -c {out / 'mosquitto.conf'}")
        if pid_path is not None and not settings.BROKER_RELOAD_COMMAND:
            self.stdout.write(
                f"The portal makes the broker reload through {pid_path} (a broker on another host needs "
                "BROKER_RELOAD_COMMAND)."
            )

    def _write(
        self,
        out: Path,
        hostnames: list[str],
        port: int,
        bind: str | None,
        user: str,
        pid_path: Path | None,
        *,
        dynsec_mode: bool,
    ) -> None:
        out.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomically(out / "ca.crt", get_ca().certificate_pem, mode=0o644)
        self._server_certificate(out, hostnames)
        create_probe_identities(extra=((DYNSEC_ADMIN, ADMIN_CN),) if dynsec_mode else ())
        dynsec_config = out / "dynamic-security.json"
        if dynsec_mode and not dynsec_config.exists():
            # Written once; from then on the plugin owns the file and the portal talks to it.
            write_atomically(dynsec_config, json.dumps(initial_config(), indent=2).encode(), mode=0o600)
            if user != getpass.getuser() and os.geteuid() == 0:
                shutil.chown(dynsec_config, user=user)
        config = BrokerConfig(
            port=port,
            ca_file=out / "ca.crt",
            certificate_file=out / "server.crt",
            key_file=out / "server.key",
            crl_file=Path(settings.BROKER_CRL_FILE),
            acl_file=Path(settings.BROKER_ACL_FILE),
            user=user,
            bind_address=bind,
            pid_file=str(pid_path) if pid_path is not None else None,
            dynsec_plugin=plugin_path() if dynsec_mode else None,
            dynsec_config=dynsec_config if dynsec_mode else None,
        )
        write_atomically(out / "mosquitto.conf", render_mosquitto_conf(config).encode(), mode=0o644)
        if user != getpass.getuser() and os.geteuid() == 0:
            # Started as root, Mosquitto switches to `user` before it reads its key.
            shutil.chown(out / "server.key", user=user)

    def _server_certificate(self, out: Path, hostnames: list[str]) -> None:
        """Reuse the broker certificate while it names the same hosts and is far from expiry."""
        dns_names, addresses = _split_names(hostnames)
        issued = ensure_server_certificate(
            out / "server.crt",
            out / "server.key",
            common_name=BROKER_COMMON_NAME,
            dns_names=dns_names,
            addresses=addresses,
            key_type=KeyType.RSA2048,
            purpose=CertificatePurpose.BROKER,
        )
        if issued is None:
            return
        previous = (
            Certificate.objects.active()
            .filter(purpose=CertificatePurpose.BROKER)
            .exclude(pk=issued.record.pk)
        )
        for certificate in previous:
            revoke_certificate(certificate, RevocationReason.SUPERSEDED)
