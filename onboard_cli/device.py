"""`onboard device`: the commands a device runs itself (EST, RFC 7030), with no API token:
`enroll` (a first certificate, with an enrolment code or zero-touch) and `renew`."""

from __future__ import annotations

import argparse
import os

from cryptography.x509.oid import NameOID

from onboard_cli import est, output
from onboard_cli.client import CliError

#: Where `onboard device enroll` finds the enrolment code when no option gives it.
CODE_VARIABLE = "ONBOARD_ENROLLMENT_CODE"


def _enrollment_code(args: argparse.Namespace) -> str:
    """--code, else --code-file, else ONBOARD_ENROLLMENT_CODE (the last two keep it out of `ps`)."""
    if args.code is not None and args.code_file is not None:
        raise CliError("Give --code or --code-file, not both.", exit_code=2)
    code: str
    if args.code_file is not None:
        try:
            code = args.code_file.read_text()
        except OSError as exc:
            raise CliError(f"Cannot read {args.code_file}: {exc.strerror}", exit_code=2) from None
    else:
        code = args.code if args.code is not None else os.environ.get(CODE_VARIABLE, "")
    if not code.strip():
        raise CliError(f"Give the enrolment code with --code-file, {CODE_VARIABLE} or --code.", exit_code=2)
    return code.strip()


def enroll_command(args: argparse.Namespace) -> int:
    """`onboard device enroll`: a first certificate, with an enrolment code or zero-touch."""
    factory = args.factory_cert is not None or args.factory_key is not None
    if factory:
        if args.factory_cert is None or args.factory_key is None:
            raise CliError("Zero-touch needs both --factory-cert and --factory-key.", exit_code=2)
        if args.device_id or args.code is not None or args.code_file is not None:
            raise CliError(
                "Give --id and a code, or --factory-cert and --factory-key, not both.", exit_code=2
            )
        device_id, code = None, None
    else:
        if not args.device_id:
            raise CliError(
                "Give --id and an enrolment code, or --factory-cert and --factory-key.", exit_code=2
            )
        device_id, code = args.device_id, _enrollment_code(args)
    certificate = est.enroll(
        args.est_url, args.ca, args.cert, args.key, device_id=device_id, code=code,
        factory_certificate=args.factory_cert, factory_key=args.factory_key,
        key_type=args.key_type, force=args.force,
    )  # fmt: skip
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    summary = {
        "enrolled": True,
        "device_id": str(common_name[0].value) if common_name else device_id,
        "serial": format(certificate.serial_number, "X"),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "certificate": str(args.cert),
        "key": str(args.key),
    }
    if args.json:
        output.emit_json(summary)
    else:
        print(f"Enrolled device {summary['device_id']}: serial {summary['serial']}, valid until "
              f"{summary['not_after']}; certificate {args.cert}, key {args.key} (mode 0600).")  # fmt: skip
    return 0


def device_command(args: argparse.Namespace) -> int:
    """`onboard device renew` and `onboard device enroll`: EST from the device."""
    if not args.est_url:
        raise CliError("Give the portal's address with --url or ONBOARD_URL.", exit_code=2)
    if args.device_command == "enroll":
        return enroll_command(args)
    if not 1 <= args.window_percent <= 100:
        raise CliError("--window-percent must be between 1 and 100.", exit_code=2)
    result = est.renew(
        args.est_url, args.cert, args.key, args.ca,
        only_if_due=args.renew_if_due, window_percent=args.window_percent, key_type=args.key_type,
    )  # fmt: skip
    summary = {
        "renewed": result.renewed,
        "serial": format(result.certificate.serial_number, "X"),
        "not_after": result.certificate.not_valid_after_utc.isoformat(),
        "renewal_opens_at": result.opens_at.isoformat(),
    }
    if args.json:
        output.emit_json(summary)
    elif result.renewed:
        print(f"Renewed: serial {summary['serial']}, valid until {summary['not_after']}; "
              f"old files kept as {args.cert}.bak and {args.key}.bak.")  # fmt: skip
    else:
        print(f"Not due: renewal opens at {summary['renewal_opens_at']}; nothing done.")
    return 0
