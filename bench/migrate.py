"""The post-deploy step's cost: a fresh apply and a no-op re-run, connection included.

    .venv/bin/python bench/migrate.py [--repeat 5]

Starts a throwaway RDS-shaped cluster (dbctl.cluster) in a temp dir on a free port. Each repetition creates an
empty database, then times, in this process, from connect to disconnect:

- fresh:  `run_migrate` on the empty database (roles, history table, init migration, grants);
- no-op:  `run_migrate` again (lock, plan, role drift check: nothing to do);
- cli:    the no-op run as a user runs it, `python -m dbctl migrate` (interpreter start and imports included).

The baseline is one TLS+SCRAM connection and `SELECT 1` on the same server in the same run; figures are also
printed as multiples of it. Target from the issue: the no-op run under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dbctl.core import names  # noqa: E402
from dbctl.core.scram import scram_verifier  # noqa: E402
from dbctl.postgres.cluster import throwaway_cluster  # noqa: E402
from dbctl.schema import deploy, maintenance  # noqa: E402
from dbctl.schema.credentials import verifiers_from_mapping  # noqa: E402


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    passwords = {role: secrets.token_urlsafe(24) for role in names.LOGIN_ROLES}
    secrets_json = {
        role: {names.SECRET_PASSWORD_KEY: pw, names.SECRET_VERIFIER_KEY: scram_verifier(pw, os.urandom(16))}
        for role, pw in passwords.items()
    }
    verifiers = verifiers_from_mapping(secrets_json, "bench")
    figures: dict[str, list[float]] = {"baseline": [], "fresh": [], "no-op": [], "cli": []}
    with throwaway_cluster("dbctl-bench-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
        credentials = cluster.base_dir / "credentials.json"
        credentials.write_text(json.dumps(secrets_json))
        for i in range(args.repeat):
            db = f"bench_{i}"
            cluster.create_database(db)
            url = cluster.admin_conninfo(db)

            def baseline(url: str = url) -> None:
                with psycopg.connect(url) as conn:
                    conn.execute("SELECT 1").fetchone()

            figures["baseline"].append(timed(baseline))

            def step(url: str = url) -> None:
                deploy.run_migrate(url, verifiers)

            figures["fresh"].append(timed(step))
            figures["no-op"].append(timed(step))
            env = {**os.environ, "DATABASE_URL": cluster.admin_url(db), "PYTHONPATH": str(REPO)}
            argv = [sys.executable, "-m", "dbctl", "migrate", "--credentials", str(credentials), "--json"]
            started = time.perf_counter()
            result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            figures["cli"].append(time.perf_counter() - started)
            if result.returncode != 0 or json.loads(result.stdout)["changed"]:
                raise SystemExit(f"the CLI no-op run did not come back clean: {result.stderr.strip()}")

    base_median = statistics.median(figures["baseline"])
    print(f"dbctl migrate, {args.repeat} repetitions, PostgreSQL on 127.0.0.1 (TLS, SCRAM), medians:")
    print(f"{'run':<10} {'median':>10} {'min':>10} {'max':>10} {'x baseline':>11}")
    for name, values in figures.items():
        median = statistics.median(values)
        print(
            f"{name:<10} {median * 1000:8.1f}ms {min(values) * 1000:8.1f}ms {max(values) * 1000:8.1f}ms"
            f" {median / base_median:10.1f}x"
        )
    no_op = statistics.median(figures["no-op"])
    print(f"no-op target < 300 ms: {'met' if no_op < 0.3 else 'NOT met'} ({no_op * 1000:.1f} ms in process)")


if __name__ == "__main__":
    main()
