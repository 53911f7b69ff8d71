"""What a benchmark run cost: CPU from /proc around it, latency percentiles from pgbench's --log files.

Pure parsing (unit-tested in tests/unit/bench/test_bench_measure.py) plus the few reads of /proc that feed it.

- Machine CPU: the first line of /proc/stat, in USER_HZ ticks. Busy = every state except idle and iowait
  (user, nice, system, irq, softirq, steal); guest and guest_nice are left out because the kernel already
  counts them in user and nice. It includes whatever else runs on the machine: on a shared box, compare the
  per-process split too.
- Per process: utime + stime of /proc/<pid>/stat (fields 14-15), and for PostgreSQL the postmaster's
  cutime + cstime (its exited backends) plus the live children's own time.
- Latency: pgbench's per-transaction log, one line per transaction: `client_id transaction_no time
  script_no time_epoch time_us [...]`, the third field the transaction's latency in microseconds.
"""

from __future__ import annotations

import os
import resource
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_IDLE_FIELDS = (3, 4)


@dataclass(frozen=True)
class MachineTicks:
    busy: int
    idle: int


def parse_proc_stat(text: str) -> MachineTicks:
    """Busy and idle ticks of all CPUs together, from /proc/stat's first (`cpu `) line."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            values += [0] * (10 - len(values))  # older kernels print fewer columns
            return MachineTicks(
                busy=sum(values[i] for i in _BUSY_FIELDS), idle=sum(values[i] for i in _IDLE_FIELDS)
            )
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


@dataclass(frozen=True)
class ProcessTicks:
    ppid: int
    own: int  # utime + stime
    children: int  # cutime + cstime: children that exited and were waited for


def parse_pid_stat(text: str) -> ProcessTicks:
    """/proc/<pid>/stat. The command name (field 2) is in parentheses and may hold spaces or ')', so the
    fields are counted from the last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    return ProcessTicks(
        ppid=int(rest[1]), own=int(rest[11]) + int(rest[12]), children=int(rest[13]) + int(rest[14])
    )


def percentiles(latencies_us: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in microseconds; the inclusive method, so a short run still gives a p99 it observed."""
    if not latencies_us:
        raise ValueError("no transactions logged")
    if len(latencies_us) == 1:
        return latencies_us[0], latencies_us[0]
    cuts = statistics.quantiles(latencies_us, n=100, method="inclusive")
    return cuts[49], cuts[98]


def parse_pgbench_log(lines: Iterable[str]) -> list[float]:
    """Latencies (µs) of the transactions in a pgbench --log file. A failed transaction logs `failed` (or
    `serialization`/`deadlock`) instead of a number; those are left out (pgbench counts them as failed)."""
    latencies = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        if fields[2].isdigit():
            latencies.append(float(fields[2]))
    return latencies


def read_pgbench_logs(directory: Path) -> list[float]:
    """Every transaction's latency in the log files pgbench wrote into `directory` (one per thread)."""
    latencies: list[float] = []
    for path in sorted(directory.iterdir()):
        with path.open() as f:
            latencies += parse_pgbench_log(f)
    return latencies


# ---------------------------------------------------------------- reading /proc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_fd_limit(wanted: int) -> int:
    """A socket per client: lift the soft RLIMIT_NOFILE toward the hard limit; the soft limit it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def machine_ticks() -> MachineTicks:
    return parse_proc_stat(Path("/proc/stat").read_text())


def process_ticks(pid: int) -> ProcessTicks | None:
    try:
        return parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def tree_ticks(parent: int) -> int:
    """A server's CPU so far: its own, its waited-for children's, and its live children's own time (a
    PostgreSQL backend that exits moves from the last term to the second, so the sum is steady).

    A child reaped while /proc is being walked would be in neither term (its entry gone, the parent's
    children total read before), which loses a whole backend's CPU right after pgbench disconnects: a reap
    changes the parent's children total, so the walk is repeated until that total held still across it."""
    for _ in range(20):
        top = process_ticks(parent)
        if top is None:
            return 0
        live = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != parent:
                child = process_ticks(int(entry.name))
                if child is not None and child.ppid == parent:
                    live += child.own
        again = process_ticks(parent)
        if again is not None and again.children == top.children:
            return top.own + top.children + live
    raise RuntimeError(f"the children of pid {parent} kept exiting while their CPU was read")


def rusage_children_seconds() -> float:
    """CPU of this process's children that have exited and been waited for (pgbench, run by subprocess)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
