"""The `onboard` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from onboard_cli import est, output, vocabulary
from onboard_cli.bulk import read_rows, run_bulk
from onboard_cli.client import CliError, PortalClient
from onboard_cli.config import profile_path, resolve, save_profile
from onboard_cli.device import CODE_VARIABLE, device_command


def _global_options(*, connection: bool, after_command: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name (`onboard --json list` and
    `onboard list --json`). After the name they default to SUPPRESS, so a subcommand leaves the
    value given before it alone unless it is given again (the later one wins)."""
    options = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if after_command else {}
    if connection:
        options.add_argument(
            "--url",
            help="portal address (default: ONBOARD_URL, the profile, http://127.0.0.1:8000)",
            **unset,
        )
        options.add_argument("--token", help="API token (default: ONBOARD_TOKEN or the profile)", **unset)
    profile_default = unset or {"default": "default"}
    options.add_argument("--profile", help=f"profile in {profile_path()}", **profile_default)
    options.add_argument("--json", action="store_true", help="machine-readable output", **unset)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onboard",
        description="Register, inspect and revoke IoT devices.",
        parents=[_global_options(connection=True, after_command=False)],
    )
    everywhere = [_global_options(connection=True, after_command=True)]
    commands = parser.add_subparsers(dest="command", required=True)

    # configure has its own --url and --token (the values to save), so only --profile and --json
    # may follow its name.
    configure = commands.add_parser(
        "configure",
        help="save the URL and token in a profile (mode 0600)",
        parents=[_global_options(connection=False, after_command=True)],
    )
    configure.add_argument("--url", dest="profile_url", required=True)
    configure.add_argument("--token", dest="profile_token", required=True)

    register = commands.add_parser("register", help="register one device", parents=everywhere)
    register.add_argument("--name", required=True)
    register.add_argument("--hardware-id")
    register.add_argument("--csr", type=Path, help="PEM CSR file, when the device made its own key")
    register.add_argument("--key-type", choices=vocabulary.KEY_TYPES)
    register.add_argument("--out", type=Path, help="download the bundle straight away to this file")
    register.add_argument(
        "--delivery",
        choices=vocabulary.DELIVERIES,
        help="zip (default): a bundle behind a one-time link; est: a code the device enrols itself with",
    )

    status = commands.add_parser("status", help="a device's status and certificate", parents=everywhere)
    status.add_argument("device_id")

    listing = commands.add_parser("list", help="list devices", parents=everywhere)
    listing.add_argument("--status", choices=vocabulary.DEVICE_STATUSES)
    listing.add_argument("--expiring-days", type=int)
    listing.add_argument("--search")

    revoke = commands.add_parser("revoke", help="revoke a device", parents=everywhere)
    revoke.add_argument("device_id")
    revoke.add_argument("--reason", choices=vocabulary.REVOCATION_REASONS)

    reissue = commands.add_parser(
        "reissue", help="new key and certificate; the old one is superseded", parents=everywhere
    )
    reissue.add_argument("device_id")
    reissue.add_argument("--key-type", choices=vocabulary.KEY_TYPES)
    reissue.add_argument("--csr", type=Path)
    reissue.add_argument("--out", type=Path)

    download = commands.add_parser(
        "download", help="download a bundle by its link, or a fresh one by device id", parents=everywhere
    )
    download.add_argument("target", help="a download URL, or a device id (asks for a new bundle)")
    download.add_argument("--out", type=Path, required=True)

    bulk = commands.add_parser("bulk-register", help="register every row of a CSV file", parents=everywhere)
    bulk.add_argument(
        "file",
        type=Path,
        help="CSV: name, hardware_id, key_type, csr_file, delivery, other columns = metadata",
    )
    bulk.add_argument("--out", type=Path, help="results CSV (mode 0600; default FILE.results.csv)")
    bulk.add_argument(
        "--delivery",
        choices=vocabulary.DELIVERIES,
        help="rows with an empty delivery cell: zip (default) or est (the results list enrolment codes)",
    )
    bulk.add_argument("--concurrency", type=int, default=4)

    commands.add_parser("health", help="the portal's health checks", parents=everywhere)

    # Run on the device itself: EST with its own certificate, no API token.
    device = commands.add_parser(
        "device",
        help="device-side EST (RFC 7030): run on the device",
        parents=[_global_options(connection=False, after_command=True)],
    )
    device_commands = device.add_subparsers(dest="device_command", required=True)
    renew = device_commands.add_parser(
        "renew",
        help="renew the device certificate (EST simplereenroll); the new key is made here",
        parents=[_global_options(connection=False, after_command=True)],
    )
    renew.add_argument("--cert", type=Path, required=True, help="the device's current certificate (PEM)")
    renew.add_argument("--key", type=Path, required=True, help="its private key (PEM); replaced too")
    renew.add_argument("--ca", type=Path, required=True, help="the portal's CA certificate, pinned for TLS")
    renew.add_argument(
        "--url", dest="est_url", metavar="URL", default=os.environ.get("ONBOARD_URL"),
        help="the portal's HTTPS address, e.g. https://portal.example.com (default: ONBOARD_URL)",
    )  # fmt: skip
    renew.add_argument(
        "--renew-if-due", action="store_true",
        help="do nothing (exit 0) until the renewal window opens: for cron or a systemd timer",
    )  # fmt: skip
    renew.add_argument(
        "--window-percent", type=int, default=est.DEFAULT_WINDOW_PERCENT,
        help="the portal's RENEWAL_WINDOW_PERCENT (default %(default)s)",
    )  # fmt: skip
    renew.add_argument("--key-type", choices=vocabulary.KEY_TYPES, help="default: the current key's type")

    enroll = device_commands.add_parser(
        "enroll",
        help="first certificate (EST simpleenroll) with an enrolment code or a factory certificate",
        parents=[_global_options(connection=False, after_command=True)],
    )
    enroll.add_argument(
        "--url", dest="est_url", metavar="URL", default=os.environ.get("ONBOARD_URL"),
        help="the portal's HTTPS address (default: ONBOARD_URL)",
    )  # fmt: skip
    enroll.add_argument("--ca", type=Path, required=True, help="the portal's CA certificate, pinned for TLS")
    enroll.add_argument("--id", dest="device_id", help="the device id (with an enrolment code)")
    enroll.add_argument(
        "--code", help=f"the one-time enrolment code (better: --code-file or {CODE_VARIABLE})"
    )
    enroll.add_argument("--code-file", type=Path, help="a file holding the enrolment code")
    enroll.add_argument("--factory-cert", type=Path, help="zero-touch: the factory certificate (PEM)")
    enroll.add_argument("--factory-key", type=Path, help="zero-touch: its private key (PEM)")
    enroll.add_argument("--cert", type=Path, required=True, help="where to write the certificate (PEM)")
    enroll.add_argument("--key", type=Path, required=True, help="where to write the new key (PEM, mode 0600)")
    enroll.add_argument("--key-type", choices=vocabulary.KEY_TYPES, default=vocabulary.EC_P256)
    enroll.add_argument("--force", action="store_true", help="replace --cert and --key if they exist")
    return parser


def _save_bundle(client: PortalClient, answer: dict[str, Any], out: Path) -> None:
    data = client.download(answer["download_url"])
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _read_csr(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise CliError(f"Cannot read {path}: {exc.strerror}", exit_code=2) from None


def _credentials(args: argparse.Namespace, client: PortalClient, answer: dict[str, Any]) -> None:
    if args.out:
        _save_bundle(client, answer, args.out)
    if args.json:
        output.emit_json({**answer, "saved_to": str(args.out) if args.out else None})
    else:
        print(output.device_summary(answer))
        if "enrollment_code" in answer:
            print(output.enrollment_notice(answer))
        else:
            print(output.bundle_notice(answer, str(args.out) if args.out else None))


def run(args: argparse.Namespace) -> int:
    if args.command == "device":
        return device_command(args)
    if args.command == "configure":
        path = save_profile(args.profile, args.profile_url, args.profile_token)
        print(f"Saved profile '{args.profile}' to {path} (mode 0600).")
        return 0
    settings = resolve(args.url, args.token, args.profile)
    client = PortalClient(settings.url, settings.token)
    try:
        return dispatch(args, client)
    finally:
        client.close()


def dispatch(args: argparse.Namespace, client: PortalClient) -> int:
    if args.command == "register":
        body: dict[str, Any] = {"name": args.name}
        if args.hardware_id:
            body["hardware_id"] = args.hardware_id
        csr = _read_csr(args.csr)
        if csr:
            body["csr"] = csr
        elif args.key_type:
            body["key_type"] = args.key_type
        if args.delivery == vocabulary.DELIVERY_EST:
            if args.out:
                raise CliError("--out needs a bundle: a device with --delivery est has none.", exit_code=2)
            body["delivery"] = vocabulary.DELIVERY_EST
        _credentials(args, client, client.register(body))
    elif args.command == "status":
        device = client.device(args.device_id)
        output.emit_json(device) if args.json else print(output.device_summary(device))
    elif args.command == "list":
        devices = list(
            client.devices(status=args.status, expiring_within_days=args.expiring_days, search=args.search)
        )
        if args.json:
            output.emit_json(devices)
        else:
            rows = [
                {**device, "expires": (device.get("certificate") or {}).get("not_after", "")}
                for device in devices
            ]
            columns = [("id", "ID"), ("name", "NAME"), ("hardware_id", "HARDWARE ID"), ("status", "STATUS"),
                       ("expires", "CERTIFICATE EXPIRES")]  # fmt: skip
            print(output.table(rows, columns))
            print(f"{len(devices)} device(s)")
    elif args.command == "revoke":
        device = client.revoke(args.device_id, args.reason)
        output.emit_json(device) if args.json else print(output.device_summary(device))
    elif args.command == "reissue":
        csr = _read_csr(args.csr)
        body = {"csr": csr} if csr else ({"key_type": args.key_type} if args.key_type else {})
        _credentials(args, client, client.reissue(args.device_id, body))
    elif args.command == "download":
        return download(args, client)
    elif args.command == "bulk-register":
        return bulk_register(args, client)
    elif args.command == "health":
        health = client.health()
        if args.json:
            output.emit_json(health)
        else:
            for name, check in health["checks"].items():
                detail = check.get("message") or ", ".join(
                    f"{k} {v}" for k, v in check.items() if k != "status"
                )
                print(f"{name:<11} {check['status']:<5} {detail}")
        return 0 if health["status"] == "ok" else 1
    return 0


def download(args: argparse.Namespace, client: PortalClient) -> int:
    if args.target.startswith(("http://", "https://", "/download/")):
        data = client.download(args.target)
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        result: dict[str, Any] = {"saved_to": str(args.out)}
        output.emit_json(result) if args.json else print(f"Bundle saved to {args.out}")
        return 0
    answer = client.new_bundle(args.target)
    _save_bundle(client, answer, args.out)
    if args.json:
        output.emit_json({**answer, "saved_to": str(args.out)})
    else:
        print(output.bundle_notice(answer, str(args.out)))
    return 0


def bulk_register(args: argparse.Namespace, client: PortalClient) -> int:
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1.", exit_code=2)
    rows = read_rows(args.file, default_delivery=args.delivery)
    out = args.out or args.file.with_suffix(".results.csv")
    progress = None
    if not args.json:
        from tqdm import tqdm

        progress = tqdm(total=len(rows), unit="device", desc="registering", file=sys.stderr)

    def advance(result: dict[str, Any]) -> None:
        if progress is not None:
            progress.update(1)

    try:
        summary = run_bulk(client, rows, out, concurrency=args.concurrency, on_result=advance)
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        output.emit_json({**summary.as_dict(), "results": str(out)})
    else:
        print(
            f"{summary.registered} registered, {summary.already_registered} already registered, "
            f"{summary.failed} failed, {summary.skipped} skipped (done before). Results: {out} (mode 0600)."
        )
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 here, with argparse's message
    try:
        return run(args)
    except CliError as exc:
        if args.json and exc.payload:
            output.emit_json(exc.payload)
        print(f"onboard: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onboard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for the operator
        print(f"onboard: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def entry_point() -> None:
    sys.exit(main())
