"""The dynamic-security backend's time per change, at 1k, 10k and 100k devices in the broker.

A change is one device's registration (its role and client created) or revocation (a new CRL
given to the broker and a reload asked for; its client deleted, its role left to the full
sync). For each, the portal's `sync_broker(devices=[id])` is timed on a real Mosquitto holding
the whole fleet, and split into the broker carrying out the change's commands and the
portal's own part (database, CRL check, administrator session, asking the broker what it
holds, planning).

Raw limit, measured in the same run against the same broker: the bare plugin commands of the
change sent over an open administrator session (createRole + createClient; deleteClient).
Mosquitto 2.0's plugin rewrites its whole configuration file after every command that changes
it, so the raw limit itself grows with the fleet; the ratio shows what the portal adds. Also
timed: a full sync with nothing to change (listing and comparing the whole fleet), which every
change paid on top of its commands before changes were synced device by device.

Target: time per change flat in fleet size.
Usage: python -m bench.bench_dynsec [SAMPLES [FLEET ...]]   (default 10 samples, 1k 10k 100k)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import device_certificate, pad_fleet, report, setup_django

SAMPLES = int(sys.argv[1]) if len(sys.argv) > 1 else 10
FLEETS = [int(size) for size in sys.argv[2:]] or [1_000, 10_000, 100_000]


def main() -> None:
    setup_django(ca_key_type="ec-p256")
    from django.conf import settings
    from django.utils import timezone

    from broker import dynsec_plan
    from broker.backends.dynsec import MosquittoDynsecBackend
    from broker.dynsec_session import ControlSession
    from broker.sync import sync_broker
    from pki.revocation import revoke_certificate
    from tests.support.mosquitto import configured_broker, stop_mosquitto

    # Time spent waiting for the broker to carry out a change's commands (not the read-only
    # getClient/getRole that find out what it holds): a change's time less this is the
    # portal's own part (database, CRL check, session, planning).
    executing = [0.0]
    plain_run = ControlSession.run

    def run(self: ControlSession, commands: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return plain_run(self, commands, *args, **kwargs)
        finally:
            if any(not command["command"].startswith(("get", "list")) for command in commands):
                executing[0] += time.perf_counter() - start

    ControlSession.run = run  # type: ignore[method-assign]

    work = Path(tempfile.mkdtemp(prefix="dynsec-bench-"))
    broker = configured_broker(settings, work, "mosquitto_dynsec")
    config = broker.directory / "dynamic-security.json"
    backend = MosquittoDynsecBackend()

    rows = []
    try:
        for fleet in FLEETS:
            broker = pad_fleet(broker, fleet)
            sync_broker()  # in step, and the broker's reload after its restart done

            full = []
            for _ in range(3):
                start = time.perf_counter()
                sync_broker()
                full.append(time.perf_counter() - start)

            grant, revoke, raw_grant, raw_revoke, own_grant, own_revoke = [], [], [], [], [], []
            with backend._session() as session:
                for _ in range(SAMPLES):
                    # Raw: the bare commands of a registration and of a revocation.
                    device_id = str(uuid.uuid4())
                    role = dynsec_plan.device_role(device_id)
                    start = time.perf_counter()
                    session.run([{"command": "createRole", **role}])
                    session.run([{"command": "createClient", "username": device_id,
                                  "roles": [{"rolename": role["rolename"]}]}])  # fmt: skip
                    raw_grant.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    session.run([{"command": "deleteClient", "username": device_id}])
                    raw_revoke.append(time.perf_counter() - start)
                    session.run([{"command": "deleteRole", "rolename": role["rolename"]}])

                    # The portal: a new device with a valid certificate, then that certificate revoked.
                    device_id = str(uuid.uuid4())
                    record = device_certificate(device_id, timezone.now())
                    record.save()
                    executing[0], start = 0.0, time.perf_counter()
                    sync_broker(devices=[device_id])
                    grant.append(time.perf_counter() - start)
                    own_grant.append(grant[-1] - executing[0])
                    revoke_certificate(record)  # a new CRL, as a revocation publishes
                    executing[0], start = 0.0, time.perf_counter()
                    sync_broker(devices=[device_id])
                    revoke.append(time.perf_counter() - start)
                    own_revoke.append(revoke[-1] - executing[0])
            row = {
                "fleet": fleet,
                "samples": SAMPLES,
                "config_mb": config.stat().st_size / 1e6,
                "grant_ms": statistics.fmean(grant) * 1000,
                "revoke_ms": statistics.fmean(revoke) * 1000,
                "raw_grant_ms": statistics.fmean(raw_grant) * 1000,
                "raw_revoke_ms": statistics.fmean(raw_revoke) * 1000,
                "full_sync_ms": statistics.median(full) * 1000,
            }
            row["grant_ratio"] = row["grant_ms"] / row["raw_grant_ms"]
            row["revoke_ratio"] = row["revoke_ms"] / row["raw_revoke_ms"]
            row["portal_grant_ms"] = statistics.fmean(own_grant) * 1000
            row["portal_revoke_ms"] = statistics.fmean(own_revoke) * 1000
            rows.append(row)
            print(
                f"  {fleet:>7} devices ({row['config_mb']:.1f} MB plugin file): "
                f"registration {row['grant_ms']:.0f} ms (raw {row['raw_grant_ms']:.0f}, "
                f"{row['grant_ratio']:.2f}x, portal's own {row['portal_grant_ms']:.0f}); "
                f"revocation {row['revoke_ms']:.0f} ms (raw {row['raw_revoke_ms']:.0f}, "
                f"{row['revoke_ratio']:.2f}x, portal's own {row['portal_revoke_ms']:.0f}); "
                f"full sync {row['full_sync_ms']:.0f} ms"
            )
    finally:
        stop_mosquitto(broker)
    first, last = rows[0], rows[-1]
    own = [max(row["portal_grant_ms"], row["portal_revoke_ms"]) for row in rows]
    flat = own[-1] <= max(1.5 * own[0], own[0] + 5)
    report(
        "dynsec",
        rows,
        "dynsec: per change (registration/revocation) "
        + "; ".join(
            f"{row['fleet']} devices {row['grant_ms']:.0f}/{row['revoke_ms']:.0f} ms, "
            f"{row['grant_ratio']:.2f}x/{row['revoke_ratio']:.2f}x the bare commands, "
            f"portal's own {row['portal_grant_ms']:.0f}/{row['portal_revoke_ms']:.0f} ms"
            for row in rows
        )
        + f"; the portal's own part flat in fleet size: {'meets' if flat else 'misses'}; the bare commands "
        f"grow {last['raw_grant_ms'] / first['raw_grant_ms']:.0f}x from {first['fleet']} to {last['fleet']} "
        "devices (Mosquitto 2.0's plugin rewrites its whole file per command)",
    )


if __name__ == "__main__":
    main()
