"""Container health check for the web service: GET /health on gunicorn answers 200.

Sent with the first ALLOWED_HOSTS name as Host, so Django's host check passes; /health is exempt
from the HTTPS redirect, since this request never leaves the container.
"""

from __future__ import annotations

import http.client
import os
import sys


def main() -> int:
    hosts = [host.strip() for host in os.environ.get("ALLOWED_HOSTS", "").split(",")]
    host = next((name.lstrip(".") for name in hosts if name and name != "*"), "localhost")
    connection = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("PORT", "8000")), timeout=10)
    try:
        connection.request("GET", "/health", headers={"Host": host})
        response = connection.getresponse()
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if response.status != 200:
        print(f"unhealthy: /health answered {response.status}: {response.read(500)!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
