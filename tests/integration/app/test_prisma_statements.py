"""The app's real client (Prisma 7 over @prisma/adapter-pg) through the pool with the session reset.

Issue 24. A throwaway `dbctl local` stack (its PgBouncer renders the session reset,
`CALL spike_ops.reset_session()` in its fail-closed block) with `log_statement = all`, and
tests/integration/app/prisma_statements.mts run by Node against the .env URLs. What node-postgres sends is
read from PostgreSQL's log (`execute <unnamed>` or `execute PGBOUNCER_n`), what PgBouncer did from its SHOW
STATS. Needs the e2e suite's packages (tests/e2e, `npm ci`), as test_app_toolchain.py does; it fails, never
skips, when they are missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pgbouncer_reset import pgbouncer_totals
from dbctl.local.env import read_env
from dbctl.local.lifecycle import throwaway_stack
from dbctl.local.stack import Stack
from dbctl.schema.session_reset import RESET_QUERY
from tests.integration.app.test_app_toolchain import E2E, _run, _tool, install_e2e_packages

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("prisma_statements.mts")
ROUNDS = 20


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with throwaway_stack("dbctl-test-prisma-ps-") as stack:
        stack.cluster.set_parameter("log_statement", "all")
        yield stack


def pgbouncer_stats(stack: Stack) -> dict[str, int]:
    return pgbouncer_totals(stack, stack.state.pgbouncer_port)


def run_phase(stack: Stack, phase: str) -> tuple[dict[str, int], str, str]:
    """A warm-up run, then ROUNDS transactions; (PgBouncer's counters over them, the server log of them, the
    server log of the warm-up)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "NODE_", "PRISMA_"))},
        **read_env(stack.paths),
    }
    argv = [_tool("node"), "--import", "tsx", str(SCRIPT), phase]
    log_file = stack.cluster.log_file
    start = len(log_file.read_text(errors="replace"))
    _run([*argv, "3"], env=env, timeout=300)
    offset = len(log_file.read_text(errors="replace"))
    before = pgbouncer_stats(stack)
    output = _run([*argv, str(ROUNDS)], env=env, timeout=300)
    after = pgbouncer_stats(stack)
    assert json.loads(output.strip().splitlines()[-1]) == {"phase": phase, "transactions": ROUNDS}
    text = log_file.read_text(errors="replace")
    return {k: after[k] - before[k] for k in after}, text[offset:], text[start:offset]


def named_backends(log: str) -> set[str]:
    """The server backends (log_line_prefix's [pid]) that executed one of PgBouncer's named statements."""
    return set(re.findall(r"\[(\d+)\][^\n]*execute PGBOUNCER_", log))


@pytest.mark.timeout(900)
def test_prisma_s_statements_stay_cached_on_the_server_through_the_reset(stack: Stack) -> None:
    install_e2e_packages()
    assert E2E.is_dir()
    # As the app builds it: node-postgres sends every statement unnamed, so there is no cache to keep.
    stats, log, _ = run_phase(stack, "default")
    assert "execute <unnamed>" in log and "execute PGBOUNCER_" not in log
    assert stats["total_client_parse_count"] == stats["total_server_parse_count"] == 0
    assert log.count(RESET_QUERY) >= ROUNDS  # the reset ran after each transaction
    # With PrismaPg's statementNameGenerator the statements are named: a new client parses each once, and
    # the server connection already has them from the warm-up, so nothing is parsed on the server.
    stats, log, warm_up = run_phase(stack, "named")
    assert "execute PGBOUNCER_" in log
    # Per transaction: BEGIN, the three reads and COMMIT, each named; the new client parses each once.
    per_transaction = stats["total_bind_count"] / ROUNDS
    assert per_transaction == stats["total_client_parse_count"] == 5, stats
    # The server parses each statement once per server connection, never again: a backend the warm-up
    # already used parses nothing; one the pool opened or had not used yet parses the five once (with
    # DISCARD ALL it was five per transaction, 100 here).
    cold = named_backends(log) - named_backends(warm_up)
    assert named_backends(log), log[-2000:]
    assert stats["total_server_parse_count"] == 5 * len(cold) < 5 * ROUNDS, (stats, cold)
    assert log.count(RESET_QUERY) >= ROUNDS
