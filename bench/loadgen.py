"""Closed-loop HTTP load: `wrk` when installed, else an asyncio httpx loop.

wrk (C, from Debian: `apt-get install wrk`) costs the 2-core machine far less CPU per request
than any Python client, so it is preferred; without it the httpx loop runs instead, and the
figures say which one made them (the Python client takes CPU from the server it measures, so
its req/s are a lower bound). Each of `concurrency` clients sends its next request as soon as
the previous answer arrives; requests cycle through the given (path, body) items. `send_all`
sends a fixed list of requests once each instead (httpx, over TLS if need be).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx

# One line per item: path, a tab, the JSON body (empty for GET). Each wrk thread takes every
# n-th item, so no two threads send the same body. done() prints one machine-readable line.
WRK_SCRIPT = r"""
local items = {}
local counter = 0
local method = "GET"
local next_offset = 0

function setup(thread)
  thread:set("offset", next_offset)
  next_offset = next_offset + 1
end

function init(args)
  method = args[1]
  if args[2] ~= "" then wrk.headers["Authorization"] = "Token " .. args[2] end
  wrk.headers["Content-Type"] = "application/json"
  local stride = tonumber(args[4])
  local index = 0
  for line in io.lines(args[3]) do
    -- fewer items than threads (one bare path): every thread sends them all
    if index % stride == offset or stride > tonumber(args[5]) then
      local tab = line:find("\t", 1, true)
      items[#items + 1] = {line:sub(1, tab - 1), line:sub(tab + 1)}
    end
    index = index + 1
  end
end

function request()
  counter = counter + 1
  local item = items[(counter - 1) % #items + 1]
  local body = item[2]
  if body == "" then body = nil end
  return wrk.format(method, item[1], nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-JSON {\"requests\": %d, \"duration_us\": %d, \"errors\": %d, \"status_errors\": %d, " ..
    "\"p50_us\": %d, \"p99_us\": %d, \"mean_us\": %.1f}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class LoadResult:
    tool: str
    concurrency: int
    requests: int
    #: Answers that were not 2xx, and socket errors or timeouts.
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def succeeded_per_second(self) -> float:
        return (self.requests - self.errors) / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "succeeded_per_second": self.succeeded_per_second}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_load(
    base_url: str,
    method: str,
    items: list[tuple[str, str]],
    *,
    concurrency: int,
    seconds: float,
    token: str = "",
    tool: str | None = None,
) -> LoadResult:
    """`items`: (path, JSON body or "") pairs, sent in turn. `tool`: "wrk", "httpx" or None (best)."""
    chosen = tool or ("wrk" if wrk_available() else "httpx")
    if chosen == "wrk":
        return _run_wrk(base_url, method, items, concurrency=concurrency, seconds=seconds, token=token)
    return asyncio.run(
        _run_httpx(base_url, method, items, concurrency=concurrency, seconds=seconds, token=token)
    )


def _run_wrk(
    base_url: str, method: str, items: list[tuple[str, str]], *, concurrency: int, seconds: float, token: str
) -> LoadResult:
    threads = min(2, concurrency)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        script, lines = Path(directory) / "load.lua", Path(directory) / "items.tsv"
        script.write_text(WRK_SCRIPT)
        lines.write_text("".join(f"{path}\t{body}\n" for path, body in items))
        command = [
            "wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
            "-s", str(script), base_url, "--", method, token, str(lines), str(threads), str(len(items)),
        ]  # fmt: skip
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        problem = finished.stderr.strip() or finished.stdout
        raise RuntimeError(f"wrk failed ({finished.returncode}): {problem}")
    line = next(line for line in finished.stdout.splitlines() if line.startswith("BENCH-JSON "))
    figures = json.loads(line.removeprefix("BENCH-JSON "))
    return LoadResult(
        tool="wrk",
        concurrency=concurrency,
        requests=figures["requests"],
        errors=figures["errors"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        mean_ms=figures["mean_us"] / 1000,
    )


async def _run_httpx(
    base_url: str, method: str, items: list[tuple[str, str]], *, concurrency: int, seconds: float, token: str
) -> LoadResult:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    pending = cycle(items)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                path, body = next(pending)
                sent = time.perf_counter()
                try:
                    answer = await client.request(method, path, content=body.encode() if body else None)
                    if not 200 <= answer.status_code < 300:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _summary("httpx", concurrency, latencies, errors, elapsed)


def _summary(tool: str, concurrency: int, latencies: list[float], errors: int, elapsed: float) -> LoadResult:
    ordered = sorted(latencies) or [0.0]
    return LoadResult(
        tool=tool,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50_ms=ordered[len(ordered) // 2] * 1000,
        p99_ms=ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000,
        mean_ms=statistics.fmean(ordered) * 1000,
    )


@dataclass(frozen=True)
class Request:
    """One request of a fixed list (`send_all`): each is sent once."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SentAll:
    result: LoadResult
    #: The first answer that was not 2xx (status and the start of its body), for the report.
    first_error: str | None = None


def send_all(
    base_url: str, requests: list[Request], *, concurrency: int, verify: ssl.SSLContext | bool = True
) -> SentAll:
    """Send every request once, `concurrency` clients each sending its next as soon as its
    previous answer arrives (asyncio httpx, keep-alive; `verify` pins the server's CA over TLS).
    For requests that can be made only once, such as one-time enrolment codes; the run lasts as
    long as the list does."""
    return asyncio.run(_send_all(base_url, requests, concurrency=concurrency, verify=verify))


async def _send_all(
    base_url: str, requests: list[Request], *, concurrency: int, verify: ssl.SSLContext | bool
) -> SentAll:
    pending = iter(requests)
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60, verify=verify) as client:
        started = time.perf_counter()

        async def one_client() -> None:
            nonlocal errors, first_error
            for request in pending:
                sent = time.perf_counter()
                try:
                    answer = await client.request(
                        request.method, request.path, headers=request.headers, content=request.body
                    )
                    if not 200 <= answer.status_code < 300:
                        errors += 1
                        first_error = first_error or f"{answer.status_code} {answer.text[:300]}"
                except httpx.HTTPError as exc:
                    errors += 1
                    first_error = first_error or repr(exc)
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return SentAll(_summary("httpx", concurrency, latencies, errors, elapsed), first_error)
