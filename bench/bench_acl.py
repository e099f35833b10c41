"""ACL regeneration at 10k, 100k and 1M devices (the mosquitto_acl backend).

Raw limit: writing the same bytes to a file with fsync (the I/O floor of any file-based
backend). Portal: render from the device lists, check every line, write atomically. The
fleet's size costs nothing here (one pattern line); what grows is the revoked list, so each
fleet size is measured with 10% of it revoked, each with its own deny block.
Target: 100k <= 0.5 s, 1M <= 5 s.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

from bench.common import mean, report, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.acl import check_acl, render_acl
from kernel.fs import write_atomically

SIZES = [int(size) for size in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
REVOKED_SHARE = 0.10


def raw_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def main() -> None:
    directory = Path(tempfile.mkdtemp(prefix="acl-bench-"))
    rows = []
    for size in SIZES:
        revoked = [str(uuid.uuid4()) for _ in range(int(size * REVOKED_SHARE))]

        def portal(revoked: list[str] = revoked) -> None:
            text = render_acl(revoked, [])
            check_acl(text)
            write_atomically(directory / "mosquitto.acl", text.encode())

        data = render_acl(revoked, []).encode()

        def bare_write(data: bytes = data) -> None:
            raw_write(directory / "raw.acl", data)

        raw = timed(bare_write, repeat=3)
        measured = timed(portal, repeat=3)
        row = {
            "devices": size,
            "revoked": len(revoked),
            "bytes": len(data),
            "raw_write_s": mean(raw),
            "portal_s": mean(measured),
        }
        row["ratio"] = row["portal_s"] / row["raw_write_s"]
        rows.append(row)
        print(
            f"  {size:>8} devices ({len(revoked)} revoked, {len(data) / 1e6:.1f} MB): raw write "
            f"{row['raw_write_s']:.3f} s, portal {row['portal_s']:.3f} s, ratio {row['ratio']:.1f}x"
        )
    by_size = {row["devices"]: row["portal_s"] for row in rows}
    checks = []
    if 100_000 in by_size:
        checks.append(f"100k {'meets' if by_size[100_000] <= 0.5 else 'misses'} 0.5 s")
    if 1_000_000 in by_size:
        checks.append(f"1M {'meets' if by_size[1_000_000] <= 5 else 'misses'} 5 s")
    report(
        "acl",
        rows,
        "acl: "
        + ", ".join(f"{size}: {seconds:.3f} s" for size, seconds in by_size.items())
        + ("; " + "; ".join(checks) if checks else ""),
    )


if __name__ == "__main__":
    main()
