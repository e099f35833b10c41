from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from kernel.errors import ServiceError
from kernel.fs import write_atomically
from pki.keystore import get_ca
from pki.models import CertificatePurpose
from pki.profiles import KeyType
from pki.server_certificate import ensure_server_certificate
from proxy.nginx import InvalidProxySetting, ProxySettings, render_nginx_conf

# Clients check the subjectAltName (RFC 6125); the CN only names the certificate for people.
SERVER_COMMON_NAME = "IoT onboarding portal"
LOOPBACK = "127.0.0.1"


def _names(hostname: str) -> tuple[list[str], list[str]]:
    """(dNSName entries, iPAddress entries) for the certificate: the host name, and 127.0.0.1."""
    try:
        address = str(ipaddress.ip_address(hostname))
    except ValueError:
        return [hostname.lower()], [LOOPBACK]
    return [], sorted({address, LOOPBACK})


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise CommandError(f"Could not read {path}: {exc.strerror}.") from None
    except ValueError:
        raise CommandError(f"{path} holds no PEM certificate.") from None


class Command(BaseCommand):
    help = (
        "Write a ready nginx configuration for the portal's TLS front (server certificate, optional "
        "client certificates, load-balanced upstreams) to DIR; run it with `nginx -c DIR/nginx.conf`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, type=Path, help="directory for nginx.conf and TLS files")
        parser.add_argument("--listen", required=True, help="PORT or ADDRESS:PORT nginx listens on (TLS)")
        parser.add_argument(
            "--upstream",
            action="append",
            required=True,
            help="HOST:PORT of a portal web process (gunicorn); repeat for several, taken in turn",
        )
        parser.add_argument(
            "--hostname", default=None, help="the portal's public host name (default: the host of PORTAL_URL)"
        )
        parser.add_argument(
            "--server-cert", type=Path, default=None, help="the operator's own server certificate (PEM chain)"
        )
        parser.add_argument("--server-key", type=Path, default=None, help="its private key (PEM)")
        parser.add_argument(
            "--client-ca",
            action="append",
            type=Path,
            default=[],
            help="another CA whose client certificates nginx accepts (repeatable; the portal's CA always is)",
        )
        parser.add_argument(
            "--run-dir",
            type=Path,
            default=None,
            help="where nginx writes its pid file, logs and temporary files (default: DIR)",
        )
        parser.add_argument(
            "--user", default=None, help="user nginx's workers run as when nginx starts as root"
        )
        parser.add_argument(
            "--log-to-stderr",
            action="store_true",
            help="nginx's error log on stderr (in a container), not in the run directory",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.PROXY_SECRET:
            raise CommandError(
                "PROXY_SECRET is not set: set PROXY_SECRET or PROXY_SECRET_FILE, the same for the portal "
                "and for this command, so that the portal believes the client certificates nginx passes on."
            )
        if (options["server_cert"] is None) != (options["server_key"] is None):
            raise CommandError("Give both --server-cert and --server-key, or neither (the CA issues one).")
        out: Path = options["out"].resolve()
        run_dir: Path = (options["run_dir"] or out).resolve()
        hostname: str = options["hostname"] or urlsplit(settings.PORTAL_URL).hostname or LOOPBACK
        extra_cas = [certificate for path in options["client_ca"] for certificate in _read_certificates(path)]
        proxy = ProxySettings(
            listen=options["listen"],
            upstreams=tuple(options["upstream"]),
            server_name=hostname,
            certificate_file=out / "server.crt",
            key_file=out / "server.key",
            client_ca_file=out / "client-ca.pem",
            secret=settings.PROXY_SECRET,
            run_dir=run_dir,
            user=options["user"],
            log_to_stderr=options["log_to_stderr"],
        )
        try:
            config = render_nginx_conf(proxy)
        except InvalidProxySetting as exc:
            raise CommandError(str(exc)) from None
        try:
            out.mkdir(mode=0o755, parents=True, exist_ok=True)
            run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            ca_pem = get_ca().certificate_pem
            write_atomically(
                out / "client-ca.pem",
                ca_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in extra_cas),
                mode=0o644,
            )
            if options["server_cert"] is not None:
                self._copy_operator_certificate(out, options["server_cert"], options["server_key"])
            else:
                self._server_certificate(out, hostname)
            # It holds the proxy secret.
            write_atomically(out / "nginx.conf", config.encode(), mode=0o600)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(f"Could not write the proxy configuration: {exc}.") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {out / 'nginx.conf'} (port {proxy.listen}, {len(proxy.upstreams)} upstream(s), "
                f"{1 + len(extra_cas)} client CA(s))."
            )
        )
        self.stdout.write(f"Start the proxy with:  nginx -c {out / 'nginx.conf'}")

    def _copy_operator_certificate(self, out: Path, certificate_path: Path, key_path: Path) -> None:
        chain = _read_certificates(certificate_path)
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise CommandError(f"Could not read {key_path}: {exc.strerror}.") from None
        except (ValueError, TypeError):
            raise CommandError(f"{key_path} is not an unencrypted PEM private key.") from None
        if key.public_key() != chain[0].public_key():
            raise CommandError(f"{key_path} is not the key of the first certificate in {certificate_path}.")
        write_atomically(
            out / "server.key",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            mode=0o600,
        )
        write_atomically(
            out / "server.crt",
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
            mode=0o644,
        )

    def _server_certificate(self, out: Path, hostname: str) -> None:
        """Reuse the portal's certificate while it names the same host and is far from expiry. The
        one it replaces is not revoked: several proxies (one per host) may each hold one."""
        dns_names, addresses = _names(hostname)
        ensure_server_certificate(
            out / "server.crt",
            out / "server.key",
            common_name=SERVER_COMMON_NAME,
            dns_names=dns_names,
            addresses=addresses,
            key_type=KeyType.EC_P256,
            purpose=CertificatePurpose.PORTAL,
        )
