"""EST enrolment (RFC 7030 simpleenroll) through nginx and gunicorn on PostgreSQL, against the crypto
ceiling and against CSR registration, all measured in the same run.

The portal is served as in production: gunicorn (bench.server: 2 gthread workers, RSA-3072 CA,
tasks in process) behind Debian's nginx with the configuration `manage.py proxy_config` writes
(bench.server.tls_front), on a throw-away PostgreSQL database (BENCH_DATABASE_URL, default the
local server, postgres://postgres@127.0.0.1:5432/postgres; created, then dropped). Clients speak
TLS to nginx with the portal's CA pinned (asyncio httpx, keep-alive; bench.loadgen.send_all).

Set-up, not timed: EC P-256 device keys and CSRs, and devices registered with
`"delivery": "est"` (one enrolment code each), then a few of each request to warm both workers.
Each round, in turn, so that the shared machine's drift falls on all three alike:
(a) the crypto ceiling: in this process, what one enrolment must compute whatever the code
    around it, the CSR check (pki.csr.parse_csr) and pki.issuance.sign_certificate (the
    pre-issuance lint and the CA's signature); the cores divided by their sum;
(b) CSR registration over HTTP, `POST /api/v1/devices/` with a CSR (which also builds the
    encrypted ZIP), `--registrations` of them;
(c) `POST /.well-known/est/simpleenroll`, `--enrolments` of them, each with its device's code
    (HTTP Basic) and a base64 DER CSR; the rates count the 200 answers (failures are printed;
    over 5 % of them stops the run), and one answer is read as a PKCS#7 before the rounds.
Targets: enrolments/s >= 0.5x the ceiling, and >= 3x the registrations/s. The cores each process
tree kept busy in (b) and (c) (bench.cpu) say what limits the rates. Figures are the median of
the rounds, with the range. Run: `.venv/bin/python -m bench.bench_est [--enrolments 200]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import cpu
from bench.bench_http import make_csrs
from bench.common import crypto_floor, database_label, mean, report, spread
from bench.loadgen import LoadResult, Request, send_all
from bench.server import ServedPortal, TLSFront, served_portal, tls_front

LOCAL_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
ENROLL_PATH = "/.well-known/est/simpleenroll"
REGISTER_PATH = "/api/v1/devices/"
CEILING_RATIO_TARGET = 0.5
REGISTRATION_RATIO_TARGET = 3.0
#: A larger share of failed answers means something is broken: no figure then. Below it, the
#: failures are printed and counted (nginx has answered the odd 502 under this load).
MAX_FAILED_SHARE = 0.05
#: Requests of each kind sent before the rounds: both workers load the CA, the linter, the code.
WARM_UP = 16


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrolments", type=int, default=200, help="simpleenroll requests per round")
    parser.add_argument("--registrations", type=int, default=100, help="CSR registrations per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (spread)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients, each waiting for its answer")
    parser.add_argument("--samples", type=int, default=40, help="in-process samples of the crypto, per round")
    return parser.parse_args(argv)


def der_base64(csr_pem: str) -> bytes:
    """RFC 7030 4.2.1: the CSR as base64-encoded DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(der)


def database_name() -> str:
    """The throw-away database's name (bench.common.throwaway_postgres_database)."""
    return urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/")


def register_for_est(
    front: TLSFront, portal: ServedPortal, count: int, concurrency: int
) -> list[tuple[str, str]]:
    """`count` devices registered with `"delivery": "est"`: (device id, enrolment code) each."""
    headers = {"Authorization": f"Token {portal.token}"}
    with httpx.Client(base_url=front.url, headers=headers, verify=front.tls_context(), timeout=60) as client:

        def register(index: int) -> tuple[str, str]:
            answer = client.post(REGISTER_PATH, json={"name": f"est-{index}", "delivery": "est"})
            if answer.status_code != 201:
                raise RuntimeError(f"registration for EST answered {answer.status_code}: {answer.text[:500]}")
            device = answer.json()
            return device["id"], device["enrollment_code"]

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(register, range(count)))


def enrolment(device_id: str, code: str, csr_pem: str) -> Request:
    credentials = base64.b64encode(f"{device_id}:{code}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}", "Content-Type": "application/pkcs10"}
    return Request("POST", ENROLL_PATH, headers, der_base64(csr_pem))


def registration(token: str, name: str, csr_pem: str) -> Request:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    return Request("POST", REGISTER_PATH, headers, json.dumps({"name": name, "csr": csr_pem}).encode())


def check_one_enrolment(front: TLSFront, request: Request, device_id: str) -> None:
    """The answer is what RFC 7030 4.2.3 says: base64 of a certs-only PKCS#7 holding the
    device's certificate (CN = its id)."""
    from cryptography.hazmat.primitives.serialization import pkcs7
    from cryptography.x509.oid import NameOID

    answer = httpx.post(
        f"{front.url}{request.path}", headers=request.headers, content=request.body,
        verify=front.tls_context(), timeout=60,
    )  # fmt: skip
    if answer.status_code != 200:
        raise RuntimeError(f"simpleenroll answered {answer.status_code}: {answer.text[:500]}")
    (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.content))
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    if common_name != device_id:
        raise RuntimeError(f"simpleenroll issued a certificate for {common_name!r}, not {device_id}")


def enrolment_crypto(csr_pems: list[str], samples: int) -> dict[str, float]:
    """What one enrolment must compute whatever the code around it (mean ms, in this process):
    the CSR check and `sign_certificate` (pre-issuance lint of a copy, then the CA's signature);
    with the split of lint and CA signature, and the ZIP bundle that registration pays besides,
    each timed alone (bench.common.crypto_floor)."""
    import uuid

    from pki.csr import parse_csr
    from pki.issuance import sign_certificate

    pems = [csr_pems[index % len(csr_pems)] for index in range(samples)]
    sign_certificate(str(uuid.uuid4()), csr=parse_csr(pems[0]))  # this process's first: CA, linter
    check, sign = [], []
    for pem in pems:  # in turn, so that the machine's drift falls on both alike
        started = time.perf_counter()
        csr = parse_csr(pem)
        checked = time.perf_counter()
        sign_certificate(str(uuid.uuid4()), csr=csr)
        check.append(checked - started)
        sign.append(time.perf_counter() - checked)
    alone = crypto_floor(private_key=None, samples=samples)
    return {
        "csr_check_ms": mean(check) * 1000,
        "sign_certificate_ms": mean(sign) * 1000,
        "lint_ms": alone["lint_ms"],
        "ca_signature_ms": alone["ca_signature_ms"],
        "bundle_ms": alone["bundle_ms"],
        "enrolment_crypto_ms": (mean(check) + mean(sign)) * 1000,
    }


def measured(
    label: str, requests: list[Request], front: TLSFront, groups: list[cpu.Group], concurrency: int
) -> tuple[LoadResult, dict[str, float]]:
    """Send the requests; the rate, and the cores each process tree kept busy meanwhile."""
    before, started = cpu.snapshot(), time.perf_counter()
    sent = send_all(front.url, requests, concurrency=concurrency, verify=front.tls_context())
    cores = cpu.cores_used(groups, before, cpu.snapshot(), time.perf_counter() - started)
    if sent.result.errors:
        first = " ".join((sent.first_error or "").split())[:200]
        failed = f"{label}: {sent.result.errors} of {len(requests)} answers failed; the first: {first}"
        if sent.result.errors > MAX_FAILED_SHARE * len(requests):
            raise RuntimeError(failed)
        print(f"  {failed} (the rates count only the answers that succeeded)")
    return sent.result, cores


def gunicorn_milliseconds(result: LoadResult, cores: dict[str, float]) -> float:
    """gunicorn's CPU per request: what a request costs the portal, however many cores it got."""
    return cores["gunicorn"] * 1000 / result.succeeded_per_second


def _rate_lines(label: str, result: LoadResult, cores: dict[str, float]) -> str:
    busy = ", ".join(f"{name} {value:.2f}" for name, value in cores.items() if name != "machine")
    return (
        f"  {label:<30} {result.succeeded_per_second:7.1f}/s  p50 {result.p50_ms:6.1f} ms  "
        f"p99 {result.p99_ms:6.1f} ms  ({result.requests} in {result.seconds:.2f} s)\n"
        f"  {'':<30} cores busy: {busy}; the machine {cores['machine']:.2f} of {os.cpu_count()}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    os.environ.setdefault("BENCH_DATABASE_URL", LOCAL_POSTGRES)
    # The proxy passes client certificates on with this secret (proxy.client_cert); the portal
    # and proxy_config read it from the environment.
    os.environ.setdefault("PROXY_SECRET", secrets.token_urlsafe(32))
    cores = os.cpu_count() or 1
    enrolments_total = WARM_UP + 1 + args.rounds * args.enrolments
    csrs = make_csrs(enrolments_total + WARM_UP + args.rounds * args.registrations)
    enrol_csrs, register_csrs = csrs[:enrolments_total], csrs[enrolments_total:]
    rounds: list[dict[str, Any]] = []
    with served_portal() as portal, tls_front(portal) as front:
        print(
            f"  nginx (proxy_config) -> gunicorn {portal.workers} gthread workers x {portal.threads} "
            f"threads; "
            f"database: {database_label()}; {args.concurrency} httpx clients over TLS, CA pinned"
        )
        started = time.perf_counter()
        codes = register_for_est(front, portal, enrolments_total, args.concurrency)
        print(f"  set-up: {len(codes)} devices registered for EST in {time.perf_counter() - started:.1f} s")
        enrolments = [
            enrolment(device_id, code, csr) for (device_id, code), csr in zip(codes, enrol_csrs, strict=True)
        ]
        registrations = [
            registration(portal.token, f"csr-{index}", csr) for index, csr in enumerate(register_csrs)
        ]
        check_one_enrolment(front, enrolments[0], codes[0][0])
        groups = [cpu.Group("gunicorn", pids=(portal.pid,)), cpu.Group("nginx", pids=(front.pid,))]
        if database_label() == "PostgreSQL":
            # Its backends (CONN_MAX_AGE keeps one per gunicorn thread), not other databases' work.
            groups.append(cpu.Group("postgres", command_contains=f" {database_name()} "))
        groups.append(cpu.Group("client", pids=(os.getpid(),), tree=False))
        measured("warm-up registration", registrations[:WARM_UP], front, groups, args.concurrency)
        measured("warm-up enrolment", enrolments[1 : 1 + WARM_UP], front, groups, args.concurrency)
        enrolments, registrations = enrolments[1 + WARM_UP :], registrations[WARM_UP:]
        for number in range(args.rounds):
            crypto = enrolment_crypto(register_csrs, args.samples)
            ceiling = cores * 1000 / crypto["enrolment_crypto_ms"]
            registered, registered_cores = measured(
                "registration",
                registrations[number * args.registrations : (number + 1) * args.registrations],
                front, groups, args.concurrency,
            )  # fmt: skip
            enrolled, enrolled_cores = measured(
                "simpleenroll",
                enrolments[number * args.enrolments : (number + 1) * args.enrolments],
                front, groups, args.concurrency,
            )  # fmt: skip
            print(f" round {number + 1}/{args.rounds}")
            print(
                f"  crypto per enrolment, in process: CSR check {crypto['csr_check_ms']:.2f} + "
                f"sign_certificate {crypto['sign_certificate_ms']:.2f} ms (lint alone "
                f"{crypto['lint_ms']:.2f}, CA signature alone {crypto['ca_signature_ms']:.2f}) "
                f"= {crypto['enrolment_crypto_ms']:.2f} ms; {cores} cores: at most {ceiling:.0f}/s "
                f"(a registration's ZIP alone, besides: {crypto['bundle_ms']:.2f} ms)"
            )
            print(_rate_lines("POST /api/v1/devices/ (CSR)", registered, registered_cores))
            print(_rate_lines("POST simpleenroll", enrolled, enrolled_cores))
            # What the rates would be with the machine to the portal alone: CPU per request.
            cost = {
                "registration_gunicorn_ms": gunicorn_milliseconds(registered, registered_cores),
                "enrolment_gunicorn_ms": gunicorn_milliseconds(enrolled, enrolled_cores),
            }
            print(
                f"  gunicorn CPU per request: registration {cost['registration_gunicorn_ms']:.1f} ms, "
                f"enrolment {cost['enrolment_gunicorn_ms']:.1f} ms, of which the crypto above "
                f"{crypto['enrolment_crypto_ms'] / cost['enrolment_gunicorn_ms']:.0%}"
            )
            rounds.append(
                {
                    "crypto": crypto,
                    "ceiling_per_second": ceiling,
                    "cpu_per_request": cost,
                    "registration": {**registered.as_dict(), "cores": registered_cores},
                    "enrolment": {**enrolled.as_dict(), "cores": enrolled_cores},
                }
            )

    def figures(key: str) -> list[float]:
        return [float(row[key]["succeeded_per_second"]) for row in rounds]

    enrolled_rates, registered_rates = figures("enrolment"), figures("registration")
    ceilings = [float(row["ceiling_per_second"]) for row in rounds]
    to_ceiling = spread([rate / ceiling for rate, ceiling in zip(enrolled_rates, ceilings, strict=True)])
    to_registration = spread(
        [rate / registered for rate, registered in zip(enrolled_rates, registered_rates, strict=True)]
    )
    enrolled_spread, registered_spread, ceiling_spread = (
        spread(enrolled_rates),
        spread(registered_rates),
        spread(ceilings),
    )
    enrolment_cpu = spread([row["cpu_per_request"]["enrolment_gunicorn_ms"] for row in rounds])
    registration_cpu = spread([row["cpu_per_request"]["registration_gunicorn_ms"] for row in rounds])
    # Cores that processes outside the benchmark took while it enrolled: on a shared machine, the
    # rates above are what was left to the portal.
    others = spread([row["enrolment"]["cores"]["other"] for row in rounds])
    failed = sum(row[kind]["errors"] for row in rounds for kind in ("enrolment", "registration"))
    result = {
        "database": database_label(),
        "concurrency": args.concurrency,
        "enrolments_per_round": args.enrolments,
        "registrations_per_round": args.registrations,
        "enrolments_per_second": enrolled_spread,
        "ceiling_per_second": ceiling_spread,
        "enrolment_to_ceiling": to_ceiling,
        "registrations_per_second": registered_spread,
        "enrolment_to_registration": to_registration,
        "enrolment_gunicorn_cpu_ms": enrolment_cpu,
        "registration_gunicorn_cpu_ms": registration_cpu,
        "other_processes_cores": others,
        "failed_answers": failed,
        "rounds": rounds,
    }

    def verdict(met: bool) -> str:
        return "meets" if met else "misses"

    def ranged(figure: dict[str, float], form: str = ".0f") -> str:
        return f"{figure['median']:{form}} [{figure['min']:{form}}-{figure['max']:{form}}]"

    report(
        "est" if database_label() == "SQLite" else f"est-{database_label().lower()}",
        [result],
        f"est ({database_label()}, nginx + gunicorn, {args.concurrency} clients over TLS, {len(rounds)} "
        f"rounds of {args.enrolments} enrolments, median [min-max]): "
        f"simpleenroll {ranged(enrolled_spread)}/s; "
        f"crypto ceiling {ranged(ceiling_spread)}/s; ratio {ranged(to_ceiling, '.2f')} "
        f"(target >= {CEILING_RATIO_TARGET}: {verdict(to_ceiling['median'] >= CEILING_RATIO_TARGET)}); "
        f"CSR registration {ranged(registered_spread, '.1f')}/s; "
        f"EST / registration {ranged(to_registration, '.2f')} "
        f"(target >= {REGISTRATION_RATIO_TARGET:.0f}: "
        f"{verdict(to_registration['median'] >= REGISTRATION_RATIO_TARGET)}); "
        f"gunicorn CPU per enrolment {ranged(enrolment_cpu, '.1f')} ms, per registration "
        f"{ranged(registration_cpu, '.1f')} ms; other processes on the machine took "
        f"{ranged(others, '.2f')} of its {os.cpu_count()} cores; failed answers: {failed}",
    )


if __name__ == "__main__":
    main()
