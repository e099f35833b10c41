"""The portal over HTTP with gunicorn (2 workers): CSR registration and GET /device/<id>.

One gunicorn run (bench.server: the real project, gthread, SQLite, RSA-3072 CA, tasks in
process) serves the product's endpoints and two bare DRF endpoints (bench.http_urls): the raw
limit of DRF served the same way, measured in the same run, round after round.

(a) `POST /register` with a CSR (EC P-256 keys and CSRs made before any timing, one per
    registration), `--register-concurrency` clients: registrations per second against the
    bare GET's requests per second, and against the crypto ceiling: the cores divided by what
    one CSR registration must compute (encrypted bundle, lint, CA signature; bench.common.
    crypto_floor). Target >= 400/s.
(b) `GET /device/<id>` over 64 registered devices, concurrency 8: req/s, p50, p99 against the
    bare endpoint with the same authentication. Target >= 0.8x its req/s, p99 <= 15 ms.

Every figure is the median of `--rounds` rounds, with the range. SQLite by default;
BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres runs the same on a throw-away
PostgreSQL database (the production shape: no single write lock). The load generator is wrk
(`apt-get install wrk`) or, without it, an asyncio httpx loop (see bench.loadgen).
Run: `.venv/bin/python -m bench.bench_http [--seconds 10] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench.common import crypto_floor, database_label, report, spread
from bench.loadgen import LoadResult, run_load, wrk_available
from bench.server import served_portal

GET_TARGET_DEVICES = 64
REGISTRATION_TARGET = 400.0
GET_RATIO_TARGET = 0.8
GET_P99_TARGET_MS = 15.0
#: CSRs made per registration round: enough for this many registrations per second.
CSR_HEADROOM_PER_SECOND = 600


def make_csrs(count: int) -> list[str]:
    """Device-side key pairs and CSRs (EC P-256, what constrained devices usually make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-device")])
    csrs = []
    for _ in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        csrs.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return csrs


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (spread)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for the GET measurements")
    parser.add_argument("--register-concurrency", type=int, default=8, help="clients posting CSRs")
    parser.add_argument("--tool", choices=("wrk", "httpx"), default=None, help="default: wrk if installed")
    return parser.parse_args(argv)


def _line(label: str, result: LoadResult) -> str:
    return (
        f"  {label:<34} {result.succeeded_per_second:8.1f}/s  p50 {result.p50_ms:6.2f} ms  "
        f"p99 {result.p99_ms:6.2f} ms  ({result.requests} requests, {result.errors} errors)"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    tool = args.tool or ("wrk" if wrk_available() else "httpx")
    per_round = int(args.seconds * CSR_HEADROOM_PER_SECOND)
    csrs = make_csrs(GET_TARGET_DEVICES + per_round * args.rounds)
    rounds: list[dict[str, Any]] = []
    with served_portal() as portal:
        print(
            f"  gunicorn: {portal.workers} gthread workers x {portal.threads} threads; "
            f"database: {database_label()}; load: {tool}"
        )
        with portal.client() as client:
            device_ids = []
            for index, csr in enumerate(csrs[:GET_TARGET_DEVICES]):
                answer = client.post("/register", json={"name": f"get-target-{index}", "csr": csr})
                answer.raise_for_status()
                device_ids.append(answer.json()["id"])
        devices = [(f"/device/{device_id}", "") for device_id in device_ids]
        bare, anonymous = [("/bench/bare", "")], [("/bench/bare-anonymous", "")]

        def load(method: str, items: list[tuple[str, str]], concurrency: int, seconds: float) -> LoadResult:
            return run_load(
                portal.url,
                method,
                items,
                concurrency=concurrency,
                seconds=seconds,
                token=portal.token,
                tool=tool,
            )

        # The most CSR registrations these cores could sign, lint and package per second, with
        # nothing else to do: the raw limit under the registration figure.
        floor = crypto_floor(private_key=None, samples=100)
        ceiling = (os.cpu_count() or 1) * 1000 / floor["crypto_floor_ms"]
        print(
            f"  CSR registration crypto alone: bundle {floor['bundle_ms']:.1f} + lint {floor['lint_ms']:.1f}"
            f" + CA signature {floor['ca_signature_ms']:.1f} = {floor['crypto_floor_ms']:.1f} ms;"
            f" {os.cpu_count()} cores: at most {ceiling:.0f}/s"
        )
        for items in (bare, anonymous, devices):  # warm both workers: imports, CA, connections
            load("GET", items, args.concurrency, 2)
        for number in range(args.rounds):
            start = GET_TARGET_DEVICES + number * per_round
            registrations = [
                ("/register", json.dumps({"name": f"http-{number}-{index}", "csr": csr}))
                for index, csr in enumerate(csrs[start : start + per_round])
            ]
            measured = {
                "bare_get": load("GET", bare, args.concurrency, args.seconds),
                "bare_get_anonymous": load("GET", anonymous, args.concurrency, args.seconds),
                "device_get": load("GET", devices, args.concurrency, args.seconds),
                "register_csr": load("POST", registrations, args.register_concurrency, args.seconds),
            }
            print(f" round {number + 1}/{args.rounds}")
            print(_line("bare DRF GET (token auth)", measured["bare_get"]))
            print(_line("bare DRF GET (no auth)", measured["bare_get_anonymous"]))
            print(_line("GET /device/<id>", measured["device_get"]))
            print(_line("POST /register (CSR)", measured["register_csr"]))
            rounds.append({name: result.as_dict() for name, result in measured.items()})

    def figures(name: str, key: str) -> list[float]:
        return [float(measured[name][key]) for measured in rounds]

    registrations_per_second = spread(figures("register_csr", "succeeded_per_second"))
    bare_per_second = spread(figures("bare_get", "succeeded_per_second"))
    device_per_second = spread(figures("device_get", "succeeded_per_second"))
    ratios = [
        measured["device_get"]["succeeded_per_second"] / measured["bare_get"]["succeeded_per_second"]
        for measured in rounds
    ]
    registration_ratios = [
        measured["register_csr"]["succeeded_per_second"] / measured["bare_get"]["succeeded_per_second"]
        for measured in rounds
    ]
    device_p50, device_p99 = spread(figures("device_get", "p50_ms")), spread(figures("device_get", "p99_ms"))
    result = {
        "tool": tool,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "register_concurrency": args.register_concurrency,
        "registrations_per_second": registrations_per_second,
        "registration_to_bare_get": spread(registration_ratios),
        "registration_crypto": floor,
        "registration_crypto_ceiling_per_second": ceiling,
        "bare_get_per_second": bare_per_second,
        "bare_get_anonymous_per_second": spread(figures("bare_get_anonymous", "succeeded_per_second")),
        "device_get_per_second": device_per_second,
        "device_to_bare_get": spread(ratios),
        "device_get_p50_ms": device_p50,
        "device_get_p99_ms": device_p99,
        "bare_get_p99_ms": spread(figures("bare_get", "p99_ms")),
        "rounds": rounds,
    }
    registration_verdict = "meets" if registrations_per_second["median"] >= REGISTRATION_TARGET else "misses"
    get_verdict = (
        "meets"
        if result["device_to_bare_get"]["median"] >= GET_RATIO_TARGET
        and device_p99["median"] <= GET_P99_TARGET_MS
        else "misses"
    )
    bare_p99 = result["bare_get_p99_ms"]
    database = database_label()
    report(
        "http" if database == "SQLite" else f"http-{database.lower()}",
        [result],
        f"http ({tool}, {database}, {len(rounds)} rounds, median [min-max]): CSR registration "
        f"{registrations_per_second['median']:.0f}/s [{registrations_per_second['min']:.0f}-"
        f"{registrations_per_second['max']:.0f}] vs bare DRF GET {bare_per_second['median']:.0f}/s "
        f"({result['registration_to_bare_get']['median']:.3f}x; "
        f"{registrations_per_second['median'] / ceiling:.2f}x the crypto ceiling of {ceiling:.0f}/s; "
        f"target >= 400/s: {registration_verdict}); "
        f"GET /device {device_per_second['median']:.0f}/s = {result['device_to_bare_get']['median']:.2f}x "
        f"bare [{min(ratios):.2f}-{max(ratios):.2f}], p50 {device_p50['median']:.1f} ms, "
        f"p99 {device_p99['median']:.1f} ms [{device_p99['min']:.1f}-{device_p99['max']:.1f}] "
        f"(target >= 0.8x, p99 <= 15 ms: {get_verdict}; the bare GET's own p99 {bare_p99['median']:.1f} ms)",
    )


if __name__ == "__main__":
    main()
