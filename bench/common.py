"""Shared set-up for the benchmarks: a throw-away portal (its own CA; SQLite, or a throw-away PostgreSQL
database with BENCH_DATABASE_URL) in a temp dir."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def setup_django(ca_key_type: str | None = "rsa3072") -> Path:
    """Configure a fresh portal in a temp DATA_DIR, migrate it and create its CA.

    `ca_key_type` None leaves the choice to `init_ca` (the product default, RSA-3072).
    The database is SQLite in the DATA_DIR, or, with BENCH_DATABASE_URL naming a PostgreSQL
    server (`postgres://postgres@127.0.0.1:5432/postgres`), a throw-away database created
    there and dropped when the benchmark ends.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="onboarding-bench-"))
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["DATABASE_URL"] = throwaway_postgres_database(os.environ["BENCH_DATABASE_URL"])
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "onboarding.settings",
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "bench-secret-key-" + "x" * 40,
            "CA_KEY_PASSPHRASE": "bench-passphrase",
            "DEBUG": "false",
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "API_THROTTLE_USER": "1000000/minute",
            "API_THROTTLE_ANON": "1000000/minute",
            "LOG_LEVEL": "WARNING",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    key_type = ["--key-type", ca_key_type] if ca_key_type else []
    call_command("init_ca", *key_type, stdout=open(os.devnull, "w"))  # noqa: SIM115
    return data_dir


def throwaway_postgres_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL; it is dropped at exit."""
    import atexit
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    name = f"onboarding_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    atexit.register(drop)
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def database_label() -> str:
    return "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"


def raw_keygen_and_sign() -> None:
    """The raw limit of a registration with a server key: `cryptography` generating an RSA-2048
    key and the portal's CA signing one certificate for it. Needs `setup_django`."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from pki.keystore import get_ca

    authority = get_ca()
    now = dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raw")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(authority.private_key, hashes.SHA256())
    )


def crypto_floor(private_key: Any = None, samples: int = 100) -> dict[str, float]:
    """What one registration must compute whatever the code around it, each step timed alone
    (mean ms): the WinZip-AES bundle (PBKDF2, 1000 rounds per file, fixed by the format; one
    file fewer for a CSR, `private_key` None), the RFC 5280 lint, and the CA's signature.
    Needs a configured portal (`setup_django`)."""
    import datetime as dt
    import uuid

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.conf import settings

    from devices.bundles import BundleContents, build_bundle, new_bundle_password
    from pki.keystore import get_ca
    from pki.lint import lint_certificate
    from pki.profiles import SIGNATURE_HASH, CertificateRequest, end_entity_builder, private_key_pem

    authority = get_ca()
    now = dt.datetime.now(dt.UTC)
    device_id = str(uuid.uuid4())
    request = CertificateRequest(
        common_name=device_id,
        public_key=(private_key or ec.generate_private_key(ec.SECP256R1())).public_key(),
        serial=x509.random_serial_number(),
        not_before=now,
        not_after=now + dt.timedelta(days=365),
        crl_url=settings.CRL_URL,
    )
    builder = end_entity_builder(request, authority.certificate)
    certificate = builder.sign(authority.private_key, SIGNATURE_HASH)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    contents = BundleContents(
        device_id=device_id, device_name="bench", certificate_pem=pem,
        ca_certificate_pem=authority.certificate_pem,
        private_key_pem=private_key_pem(private_key) if private_key is not None else None,
        broker_host="broker.example", broker_port=8883,
        topics=[{"filter": f"devices/{device_id}/#", "access": "readwrite"}],
        serial="01", not_after=certificate.not_valid_after_utc.isoformat(),
    )  # fmt: skip
    bundle = mean(timed(lambda: build_bundle(contents, new_bundle_password()), repeat=samples))
    lint = mean(timed(lambda: lint_certificate(certificate), repeat=samples))
    signature = mean(timed(lambda: builder.sign(authority.private_key, SIGNATURE_HASH), repeat=samples))
    return {
        "bundle_ms": bundle * 1000,
        "lint_ms": lint * 1000,
        "ca_signature_ms": signature * 1000,
        "crypto_floor_ms": (bundle + lint + signature) * 1000,
    }


def timed(function: Callable[[], Any], repeat: int = 1) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return samples


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # 1-minute load when the run ended: above the core count, other work shared the machine.
        "load_average_1min": os.getloadavg()[0],
        "database": database_label(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(name: str, rows: list[dict[str, Any]], summary: str) -> None:
    """Print a one-line summary and write the JSON result to bench/results/ (ignored by git)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "rows": rows, "summary": summary, "at": time.time()}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    print(summary)


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated runs: the figure and how much to trust it."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def device_certificate(device_id: str, now: Any) -> Any:
    """An unsaved, valid device certificate row for `device_id` (no real certificate behind it:
    the benchmarks' padding, which only the database and the broker's lists look at)."""
    import datetime as dt
    import uuid

    from pki.models import Certificate, CertificatePurpose

    serial = uuid.uuid4().hex.upper()
    return Certificate(
        serial=serial, fingerprint_sha256=serial, common_name=device_id, subject=f"CN={device_id}",
        key_type="ec-p256", not_before=now, not_after=now + dt.timedelta(days=300), pem="",
        purpose=CertificatePurpose.DEVICE,
    )  # fmt: skip


def pad_fleet(broker: Any, size: int) -> Any:
    """Bring the fleet to `size` devices holding a valid certificate: in the database and, with
    the dynamic-security backend, in the broker as the portal would have left them. Those are
    written into the plugin's file while the broker is stopped: created one command at a time,
    each rewriting the whole file, 100k devices would take hours. Returns the broker (restarted
    if it had to be). Needs `setup_django` and a broker from `tests.support.mosquitto.configured_broker`."""
    import gc
    import uuid

    from django.conf import settings
    from django.utils import timezone

    from broker import dynsec_plan
    from pki.models import Certificate, CertificatePurpose
    from tests.support.mosquitto import start_mosquitto, stop_mosquitto

    present = Certificate.objects.filter(purpose=CertificatePurpose.DEVICE).active().count()
    padding = [str(uuid.uuid4()) for _ in range(max(0, size - present))]
    now = timezone.now()
    Certificate.objects.bulk_create(
        (device_certificate(device_id, now) for device_id in padding), batch_size=5000
    )
    if settings.BROKER_BACKEND != "mosquitto_dynsec" or not padding:
        return broker
    stop_mosquitto(broker)
    config = broker.directory / "dynamic-security.json"
    held = json.loads(config.read_text())
    held["clients"] += [
        {"username": device_id, "roles": [{"rolename": dynsec_plan.DEVICE_ROLE_PREFIX + device_id}]}
        for device_id in padding
    ]
    held["roles"] += [dynsec_plan.device_role(device_id) for device_id in padding]
    config.write_text(json.dumps(held))
    del held, padding  # millions of live objects would slow every garbage collection after
    gc.collect()
    return start_mosquitto(broker.directory, broker.port)
