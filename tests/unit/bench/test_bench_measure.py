"""bench/measure.py and bench/pgbouncer.py's parsing: /proc deltas, pgbench logs and summaries, targets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import measure
from bench.pgbouncer import Cpu, Route, Row, Run, alternate, parse_pgbench, targets, who_pays

# /proc/stat as Linux 6.x prints it: user nice system idle iowait irq softirq steal guest guest_nice
PROC_STAT = """cpu  1000 20 300 5000 40 5 6 7 100 3
cpu0 500 10 150 2500 20 2 3 3 50 1
cpu1 500 10 150 2500 20 3 3 4 50 2
intr 12345 0 0
ctxt 999
"""


def test_busy_is_every_state_but_idle_and_iowait_without_guest_twice() -> None:
    ticks = measure.parse_proc_stat(PROC_STAT)
    # user + nice + system + irq + softirq + steal; guest/guest_nice are inside user/nice already
    assert ticks.busy == 1000 + 20 + 300 + 5 + 6 + 7
    assert ticks.idle == 5000 + 40


def test_an_older_kernel_with_fewer_columns_still_parses() -> None:
    assert measure.parse_proc_stat("cpu  10 0 5 100 1 0 0\n").busy == 15


def test_proc_stat_without_the_aggregate_line_is_refused() -> None:
    with pytest.raises(ValueError, match="'cpu' line"):
        measure.parse_proc_stat("cpu0 1 2 3 4\n")


def test_pid_stat_counts_fields_after_a_command_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
    # cstime ...
    line = "4242 (postgres: spike_app (x) idle) S 4200 4200 4200 0 -1 4194560 10 0 0 0 17 5 300 45 20 0 1"
    ticks = measure.parse_pid_stat(line)
    assert (ticks.ppid, ticks.own, ticks.children) == (4200, 17 + 5, 300 + 45)


def test_pid_stat_of_this_process_is_readable() -> None:
    ticks = measure.process_ticks(os.getpid())
    assert ticks is not None and ticks.ppid == os.getppid()


def test_pgbench_log_latencies_skip_failed_transactions() -> None:
    lines = [
        "0 1 1032 0 1796125071 470601",
        "1 1 935 0 1796125071 502411",
        "0 2 failed 0 1796125071 535665",
        "3 7 serialization 0 1796125071 535669",
        "",
        "2 1 485 0 1796125071 472106 0 0",
    ]
    assert measure.parse_pgbench_log(lines) == [1032.0, 935.0, 485.0]


def test_percentiles_p50_and_p99() -> None:
    latencies = [float(v) for v in range(1, 101)]  # 1..100 µs
    p50, p99 = measure.percentiles(latencies)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(99.01)
    slow_tail = [100.0] * 98 + [5000.0, 9000.0]
    p50, p99 = measure.percentiles(slow_tail)
    assert p50 == 100.0
    assert p99 == pytest.approx(5000.0 + 0.01 * 4000.0)


def test_percentiles_of_one_or_no_transaction() -> None:
    assert measure.percentiles([42.0]) == (42.0, 42.0)
    with pytest.raises(ValueError, match="no transactions"):
        measure.percentiles([])


def test_logs_of_every_thread_are_read(tmp_path: Path) -> None:
    (tmp_path / "tx.123").write_text("0 1 10 0 1 1\n0 2 30 0 1 2\n")
    (tmp_path / "tx.123.1").write_text("1 1 20 0 1 1\n")
    assert sorted(measure.read_pgbench_logs(tmp_path)) == [10.0, 20.0, 30.0]


STEADY = """transaction type: <builtin: select only>
number of transactions actually processed: 73680
number of failed transactions: 0 (0.000%)
latency average = 3.392 ms
initial connection time = 871.512 ms
tps = 14736.100000 (without initial connection time)
"""
CONNECT_EACH = """number of transactions actually processed: 166
number of failed transactions: 2 (1.190%)
latency average = 48.951 ms
average connection time = 23.918 ms
tps = 81.713664 (including reconnection times)
"""


def test_pgbench_summary_steady_and_connect_per_transaction() -> None:
    assert parse_pgbench(STEADY) == (73680, 0, 3.392, 14736.1, 871.512)
    # -C prints its TPS "including reconnection times" and an average connection time
    assert parse_pgbench(CONNECT_EACH) == (166, 2, 48.951, 81.713664, 23.918)
    assert parse_pgbench("pgbench: error: connection refused") == (0, 0, None, 0.0, None)


def run(tps: float, *, processed: int = 1000, p50: float = 100.0, cpu: float = 1.0) -> Run:
    return Run(tps, processed, 0, None, None, p50, 2 * p50, Cpu(cpu, cpu / 4, cpu / 4, cpu / 2))


def test_cpu_per_thousand_transactions_and_row_medians() -> None:
    row = Row("select-only", "direct", 50, (run(100, cpu=2.0), run(300, cpu=1.0), run(200, cpu=4.0)))
    assert row.tps == 200
    # 2.0, 1.0 and 4.0 s for 1,000 transactions each: the median is 2.0
    assert row.cpu_per_1000() == pytest.approx(2.0)
    assert row.cpu_per_1000("postgres") == pytest.approx(1.0)
    assert Row("x", "y", 1, (run(0, processed=0),)).cpu_per_1000() is None


def test_paths_alternate_every_other_round() -> None:
    order: list[str] = []
    paths = [Route(label, 0) for label in ("a", "b", "c")]

    def record(i: int, path: Route) -> Run:
        order.append(path.label)
        return run(1)

    out = alternate(3, paths, record)
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert {k: len(v) for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}


def rows_for(pooled_tps: float, pooled_cpu: float, pooled_p50: float) -> dict[tuple[str, str], Row]:
    rows = {}
    for workload in ("1 client", "connect-per-tx", "select-only", "read/write"):
        rows[(workload, "direct")] = Row(workload, "direct", 1, (run(100.0, p50=100.0),))
        rows[(workload, "pgbouncer")] = Row(
            workload, "pgbouncer", 1, (run(pooled_tps, p50=pooled_p50, cpu=pooled_cpu),)
        )
    return rows


def test_targets_met_and_not_met() -> None:
    met = {t.label: t.met for t in targets(rows_for(pooled_tps=300.0, pooled_cpu=1.2, pooled_p50=140.0))}
    assert met["connect-per-tx TPS, PgBouncer / direct"] is True  # 3.0x
    assert met["added latency, 1 client, SELECT 1 (p50)"] is True  # 40 µs
    assert met["50 steady clients select-only: TPS ratio"] is True
    assert met["CPU/1000 tx read/write: PgBouncer / direct"] is True  # 1.2x
    missed = {t.label: t for t in targets(rows_for(pooled_tps=89.0, pooled_cpu=1.5, pooled_p50=160.0))}
    assert missed["connect-per-tx TPS, PgBouncer / direct"].met is False
    assert missed["added latency, 1 client, SELECT 1 (p50)"].measured == pytest.approx(60.0)
    assert missed["added latency, 1 client, SELECT 1 (p50)"].met is False
    assert missed["50 steady clients read/write: TPS ratio"].met is False  # 0.89 < 0.90
    assert missed["CPU/1000 tx select-only: PgBouncer / direct"].met is False  # 1.5x


def test_the_reset_share_of_the_gap() -> None:
    rows = rows_for(pooled_tps=60.0, pooled_cpu=1.0, pooled_p50=100.0)
    rows[("select-only", "pgbouncer-no-reset")] = Row("select-only", "pgbouncer-no-reset", 1, (run(90.0),))
    lines = [line for line in who_pays(rows) if "without the reset" in line]
    # direct 100, with the reset 60, without 90: the reset is 30 of the 40 TPS gap
    assert lines == [
        "select-only: without the reset PgBouncer/direct TPS is 0.90 (with it 0.60): "
        "the reset is 75% of the gap"
    ]


def test_a_process_tree_counts_live_and_exited_children() -> None:
    """A child that burned at least 0.3 s of CPU counts while it runs and after it was waited for."""
    burn = (
        "import sys, time\nwhile time.process_time() < 0.3: pass\nsys.stdout.write('x'); sys.stdout.flush()\n"
    )
    before = measure.tree_ticks(os.getpid())
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.read(1) == b"x"  # it has burned its CPU and now waits: a live child
    alive = measure.tree_ticks(os.getpid())
    child.stdin.close()
    child.wait()
    exited = measure.tree_ticks(os.getpid())
    minimum = 0.25 * measure.CLOCK_TICKS
    assert alive - before >= minimum
    assert exited - before >= minimum
