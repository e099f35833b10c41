"""Bulk registration through `onboard bulk-register` against a gunicorn-served portal.

The portal (bench.server: gunicorn, 2 gthread workers, SQLite or BENCH_DATABASE_URL,
RSA-3072 CA, tasks in process) generates every device key itself: RSA-2048, the product
default (the CSV leaves key_type empty). The CLI runs as an operator runs it: a profile
saved with `onboard configure` (in a private XDG_CONFIG_HOME), then `onboard --json
bulk-register FILE.csv --out RESULTS.csv`, timed from start to exit.

Raw limit, measured in the same run (half the samples before the bulk run, half after):
`cryptography` generating an RSA-2048 key plus the CA signing one certificate for it, times
the number of devices, divided by the cores (the work parallelises across gunicorn's workers).
Target: total <= 1.2x that. The CLI itself shares the 2 cores with the server it drives.
Run: `.venv/bin/python -m bench.bench_bulk [--devices 10000] [--concurrency 4]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import mean, raw_keygen_and_sign, report, timed
from bench.server import served_portal

TARGET_RATIO = 1.2


def onboard_command() -> list[str]:
    """The installed `onboard` script next to this interpreter, or the module behind it."""
    script = Path(sys.executable).with_name("onboard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from onboard_cli.main import entry_point; entry_point()"]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000, help="rows in the CSV (quick run: 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="the CLI's --concurrency (its default: 4)")
    parser.add_argument("--raw-samples", type=int, default=200, help="raw keygen+sign samples (half before)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    try:
        with served_portal() as portal:
            raw = timed(raw_keygen_and_sign, repeat=args.raw_samples // 2)
            rows = work / "devices.csv"
            with rows.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["name", "hardware_id", "key_type"])
                writer.writerows([f"bulk-{index}", f"HW-{index:08d}", ""] for index in range(args.devices))
            environment = {**os.environ, "XDG_CONFIG_HOME": str(work / "config")}
            for variable in ("ONBOARD_URL", "ONBOARD_TOKEN"):
                environment.pop(variable, None)
            cli = [*onboard_command(), "--profile", "bench"]
            subprocess.run(
                [*cli, "configure", "--url", portal.url, "--token", portal.token],
                env=environment,
                check=True,
                capture_output=True,
            )
            results = work / "results.csv"
            # The CLI is the only child waited for during the run (gunicorn is waited for at
            # the end), so the children's CPU time across it is the CLI's own share of the cores.
            cli_cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            finished = subprocess.run(
                [*cli, "--json", "bulk-register", str(rows), "--out", str(results),
                 "--concurrency", str(args.concurrency)],
                env=environment,
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            cli_cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli_cpu = (cli_cpu_after.ru_utime + cli_cpu_after.ru_stime) - (
                cli_cpu_before.ru_utime + cli_cpu_before.ru_stime
            )
            raw += timed(raw_keygen_and_sign, repeat=args.raw_samples - args.raw_samples // 2)
        # gunicorn was waited for when the portal stopped: its CPU time is what the children's
        # grew by since the CLI ended.
        server_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = (server_usage.ru_utime + server_usage.ru_stime) - (
            cli_cpu_after.ru_utime + cli_cpu_after.ru_stime
        )
        if finished.returncode != 0:
            print(finished.stderr[-2000:], file=sys.stderr)
        summary = json.loads(finished.stdout) if finished.stdout.strip() else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw_ms = mean(raw) * 1000
    limit = args.devices * mean(raw) / cores
    row = {
        "devices": args.devices,
        "concurrency": args.concurrency,
        "cores": cores,
        "cli_exit_code": finished.returncode,
        "registered": summary.get("registered", 0),
        "failed": summary.get("failed", 0),
        "total_s": elapsed,
        "per_device_ms": elapsed / args.devices * 1000,
        "raw_keygen_sign_ms": raw_ms,
        "raw_samples": len(raw),
        "limit_s": limit,
        "ratio": elapsed / limit,
        "cli_cpu_s": cli_cpu,
        "cli_cpu_share": cli_cpu / (elapsed * cores),
        "server_cpu_s": server_cpu,
        "server_cpu_share": server_cpu / (elapsed * cores),
    }
    print(
        f"  raw RSA-2048 keygen + CA signature: {raw_ms:.1f} ms mean over {len(raw)}; "
        f"{args.devices} x that / {cores} cores = {limit:.1f} s"
    )
    print(
        f"  onboard bulk-register, {args.devices} devices, concurrency {args.concurrency}: {elapsed:.1f} s "
        f"({row['registered']} registered, {row['failed']} failed), {row['ratio']:.2f}x"
    )
    print(
        f"  CPU time over the run: the CLI {cli_cpu:.1f} s ({row['cli_cpu_share']:.0%} of {cores} cores), "
        f"gunicorn {server_cpu:.1f} s ({row['server_cpu_share']:.0%}; start-up included)"
    )
    verdict = "meets" if row["ratio"] <= TARGET_RATIO and row["registered"] == args.devices else "misses"
    report(
        "bulk",
        [row],
        f"bulk: {args.devices} devices in {elapsed:.1f} s = {row['ratio']:.2f}x "
        f"{args.devices} x raw keygen+sign / {cores} cores ({limit:.1f} s); target <= 1.2x: {verdict}",
    )


if __name__ == "__main__":
    main()
