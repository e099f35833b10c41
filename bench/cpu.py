"""CPU time per process tree from /proc (Linux), to say what limits a benchmark.

A tree's time is its processes' own time plus what they have reaped of their exited children
(`cutime`, `cstime`), so a worker that ended during the run still counts. Differences of two
snapshots give the CPU seconds each group used in between; divided by the wall time, the cores
it kept busy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessTimes:
    pid: int
    parent: int
    name: str
    #: user + system seconds of the process (all its threads)
    own: float
    #: user + system seconds of its children that exited and that it waited for
    reaped: float
    #: its command line, arguments joined by spaces
    command: str


@dataclass(frozen=True)
class Snapshot:
    processes: dict[int, ProcessTimes]
    #: seconds the machine's cores were busy (not idle, not waiting for I/O) since boot
    machine_busy: float


def _read_process(stat: Path) -> ProcessTimes | None:
    try:
        text = stat.read_text()
        command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # it ended meanwhile
        return None
    # The name is in parentheses and may itself hold spaces or parentheses.
    head, _, tail = text.rpartition(")")
    pid, _, name = head.partition(" (")
    fields = tail.split()
    # proc(5): fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), counted from 1 with `pid`
    # and `comm` as 1 and 2; `fields` starts at field 3.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ProcessTimes(
        pid=int(pid),
        parent=int(fields[1]),
        name=name,
        own=(utime + stime) / TICKS_PER_SECOND,
        reaped=(cutime + cstime) / TICKS_PER_SECOND,
        command=command,
    )


def snapshot() -> Snapshot:
    processes = {}
    for stat in PROC.glob("[0-9]*/stat"):
        times = _read_process(stat)
        if times is not None:
            processes[times.pid] = times
    # /proc/stat, first line: user nice system idle iowait irq softirq steal ...
    fields = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return Snapshot(processes, busy / TICKS_PER_SECOND)


def _tree(processes: dict[int, ProcessTimes], roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for times in processes.values():
        children.setdefault(times.parent, []).append(times.pid)
    members: set[int] = set()
    pending = [pid for pid in roots if pid in processes]
    while pending:
        pid = pending.pop()
        if pid not in members:
            members.add(pid)
            pending.extend(children.get(pid, []))
    return members


@dataclass(frozen=True)
class Group:
    """Processes named for the report: the trees under some pids (with their children, also
    those that ended meanwhile: their parent reaped them), those pids alone (`tree` False), or
    every process whose command line holds `command_contains` (e.g. the PostgreSQL backends of
    one database, which name it), each counted from the first snapshot or from its start: one
    that ends before the second snapshot is lost (a backend lives CONN_MAX_AGE, 60 s)."""

    label: str
    pids: tuple[int, ...] = ()
    command_contains: str | None = None
    #: False: the processes themselves only, not their children (the benchmark's own process,
    #: whose children are the servers it measures)
    tree: bool = True

    def seconds_between(self, before: Snapshot, after: Snapshot) -> float:
        if self.command_contains is not None:
            text = self.command_contains
            earlier = {pid: times.own for pid, times in before.processes.items() if text in times.command}
            return sum(
                times.own - earlier.get(pid, 0.0)
                for pid, times in after.processes.items()
                if text in times.command
            )
        return self._seconds(after) - self._seconds(before)

    def _seconds(self, at: Snapshot) -> float:
        if not self.tree:
            return sum(at.processes[pid].own for pid in self.pids if pid in at.processes)
        return sum(at.processes[pid].own + at.processes[pid].reaped for pid in _tree(at.processes, self.pids))


def cores_used(
    groups: list[Group], before: Snapshot, after: Snapshot, wall_seconds: float
) -> dict[str, float]:
    """The cores each group kept busy between the snapshots (CPU seconds ÷ wall seconds), then
    `other` (every other process on the machine) and `machine` (all of it together)."""
    used = {group.label: group.seconds_between(before, after) / wall_seconds for group in groups}
    machine = (after.machine_busy - before.machine_busy) / wall_seconds
    return {**used, "other": max(0.0, machine - sum(used.values())), "machine": machine}
