"""CRL build and publication at 1k, 10k and 100k revoked certificates.

Raw limit: `cryptography` building and signing the same CRL from ready-made entries in one
builder call (what any implementation must at least pay). Portal: the full publication, from
the database query to the checked, atomically written crl.pem. Target: 100k <= 1 s.
"""

from __future__ import annotations

import datetime as dt
import sys

from bench.common import mean, report, setup_django, timed

SIZES = [int(size) for size in sys.argv[1:]] or [1_000, 10_000, 100_000]


def main() -> None:
    setup_django(ca_key_type="rsa3072")
    from cryptography import x509
    from django.utils import timezone

    from pki.crl import publish_crl
    from pki.keystore import get_ca
    from pki.models import Certificate, CertificateStatus
    from pki.profiles import RevocationReason, RevokedEntry, build_crl, serial_hex

    authority = get_ca()
    now = timezone.now()
    rows, created = [], 0
    for size in SIZES:
        batch = []
        for _ in range(size - created):
            serial = x509.random_serial_number()
            batch.append(
                Certificate(
                    serial=serial_hex(serial),
                    fingerprint_sha256=serial_hex(serial),
                    common_name="bench",
                    subject="CN=bench",
                    key_type="ec-p256",
                    not_before=now,
                    not_after=now + dt.timedelta(days=300),
                    pem="",
                    status=CertificateStatus.REVOKED,
                    revoked_at=now,
                    revocation_reason="keyCompromise",
                )
            )
        Certificate.objects.bulk_create(batch, batch_size=5000)
        created = size
        entries = [
            RevokedEntry(int(serial, 16), revoked_at or now, RevocationReason.KEY_COMPROMISE)
            for serial, revoked_at in Certificate.objects.revoked().values_list("serial", "revoked_at")
        ]

        def bare_build(entries: list[RevokedEntry] = entries) -> None:
            build_crl(
                issuer=authority.certificate,
                signing_key=authority.private_key,
                revoked=entries,
                crl_number=1,
                this_update=now,
                next_update=now + dt.timedelta(hours=72),
            )

        raw = timed(bare_build, repeat=3)
        portal = timed(publish_crl, repeat=3)
        row = {"revoked": size, "raw_build_s": mean(raw), "portal_publish_s": mean(portal)}
        row["ratio"] = row["portal_publish_s"] / row["raw_build_s"]
        rows.append(row)
        print(
            f"  {size:>7} revoked: raw build {row['raw_build_s']:.3f} s, "
            f"portal publish {row['portal_publish_s']:.3f} s, ratio {row['ratio']:.2f}x"
        )
    largest = rows[-1]
    verdict = "meets" if largest["portal_publish_s"] <= 1.0 or largest["revoked"] < 100_000 else "misses"
    report(
        "crl",
        rows,
        f"crl: {largest['revoked']} revoked published in {largest['portal_publish_s']:.3f} s "
        f"({largest['ratio']:.2f}x the bare build); target 100k <= 1 s: {verdict}",
    )


if __name__ == "__main__":
    main()
