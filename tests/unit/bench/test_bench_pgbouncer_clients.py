"""bench/pgbouncer_clients.py's pure parts: the row argument, clients per process from `ss`, the table."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[3] / "bench" / "pgbouncer_clients.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_pgbouncer_clients", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()

SS = """\
0      0      127.0.0.1:6543 127.0.0.1:51911 users:(("pgbouncer",pid=22015,fd=10))
0      0      127.0.0.1:6543 127.0.0.1:51912 users:(("pgbouncer",pid=22016,fd=11))
0      0      127.0.0.1:6543 127.0.0.1:51913 users:(("pgbouncer",pid=22015,fd=12))
0      0      127.0.0.1:51911 127.0.0.1:6543 users:(("python",pid=1,fd=7))
0      0      127.0.0.1:46655 127.0.0.1:43710 users:(("postgres",pid=20984,fd=6))
0      0      127.0.0.1:40000 127.0.0.1:5432 users:(("pgbouncer",pid=22015,fd=20))
"""


def test_clients_are_counted_per_pgbouncer_pid_on_the_listen_port_only() -> None:
    # The client's own end (local port 51911) and pgbouncer's server connections (to 5432) are not clients.
    assert bench.clients_per_pid(SS, 6543, [22015, 22016, 999]) == [2, 1, 0]
    assert bench.clients_per_pid("", 6543, [22015]) == [0]


def test_rows_parse_and_bad_ones_are_refused_with_the_format() -> None:
    assert bench.parse_rows("1:1000:1000, 2:1100:2000") == [
        bench.Row(1, 1000, 1000),
        bench.Row(2, 1100, 2000),
    ]
    for bad in ("2:1000", "0:1000:10", "a:b:c", "2:1000:2000,"):
        with pytest.raises(argparse.ArgumentTypeError, match="PROCESSES:MAX_CLIENT_CONN:CLIENTS"):
            bench.parse_rows(bad)


def test_the_table_flags_a_process_over_its_max_client_conn() -> None:
    ok = bench.Outcome(bench.Row(2, 1100, 2000), 2000, 0, "", 0, (967, 1033), 52.7)
    over = bench.Outcome(
        bench.Row(2, 1000, 2000), 1995, 5, "FATAL: no more connections", 0, (995, 1001), 44.6
    )
    lines = bench.format_table([ok, over]).splitlines()
    assert "967 + 1033 (ok)" in lines[1] and lines[1].rstrip().endswith("-")
    assert "995 + 1001 (OVER)" in lines[2] and "FATAL: no more connections" in lines[2]
