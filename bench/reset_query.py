"""What a reset after every pooled transaction costs: PgBouncer with server_reset_query_always 0 vs 1.

    .venv/bin/python bench/reset_query.py [--clients 50] [--rounds 3] [--seconds 5]

A throwaway PostgreSQL (TLS, SCRAM) prepared by `dbctl migrate`'s own step, and the real pgbouncer with the
shared renderer's config in three MODES: no reset (`server_reset_query_always = 0`), `DISCARD ALL` after
every transaction, and a lighter reset that keeps prepared statements and plans. pgbench runs as spike_app
through the transaction pool, steady connections, `-M extended`, TLS on both legs. Two scripts: `SELECT 1`
alone (the worst case: the reset is a second round trip for a transaction that does nothing) and a
3-statement read transaction on the app's "User" table. The modes alternate over the rounds and the table
shows medians (these machines are shared). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbctl.core import names
from dbctl.core.scram import SALT_BYTES, scram_verifier
from dbctl.pgbouncer.config import POOLED_ROLES, ClientTls, ServerTls
from dbctl.pgbouncer.process import PgBouncerServer
from dbctl.postgres.cluster import throwaway_cluster
from dbctl.postgres.install import find_binary
from dbctl.postgres.osproc import free_port
from dbctl.schema import deploy, maintenance

SCRIPTS = {
    "select-1": "SELECT 1;\n",
    "read-tx": (
        "BEGIN;\n"
        "SELECT count(*) FROM \"User\" WHERE id = 'a';\n"
        "SELECT count(*) FROM \"User\" WHERE email = 'b';\n"
        "SELECT now();\n"
        "END;\n"
    ),
}
# name: (server_reset_query_always, server_reset_query)
MODES = {
    "off": (False, "DISCARD ALL"),
    "discard-all": (True, "DISCARD ALL"),
    "light": (True, "RESET ALL; SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; DISCARD TEMP"),
}
_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"latency average = ([\d.]+) ms")


def pgbench(port: int, password: str, script: Path, clients: int, seconds: int) -> tuple[float, float]:
    """(TPS, average latency ms) of one run; the password travels in PGPASSWORD only."""
    args = [
        str(find_binary("pgbench")),
        "-n",
        "-M",
        "extended",
        "-c",
        str(clients),
        "-j",
        str(os.cpu_count()),
    ]
    args += [
        "-T",
        str(seconds),
        "-f",
        str(script),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        names.login_users(names.APP_ROLE)[0],
    ]
    env = {**os.environ, "PGPASSWORD": password, "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "60"}
    proc = subprocess.run(
        [*args, names.DATABASE_NAME],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 120,
        check=False,
    )
    tps, latency = _TPS.search(proc.stdout), _LATENCY.search(proc.stdout)
    if proc.returncode != 0 or tps is None or latency is None:
        raise SystemExit(f"pgbench failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(tps[1]), float(latency[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    passwords = {role: secrets.token_urlsafe(24) for role in names.LOGIN_ROLES}
    # Each role's first login user (a pooled role's _a: dbctl.names.login_users).
    users = {role: names.login_users(role)[0] for role in names.LOGIN_ROLES}
    verifiers = {users[role]: scram_verifier(pw, os.urandom(SALT_BYTES)) for role, pw in passwords.items()}
    scratch = Path(tempfile.mkdtemp(prefix="dbctl-bench-reset-"))
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for name, text in SCRIPTS.items():
            (scratch / f"{name}.sql").write_text(text)
        with throwaway_cluster("dbctl-bench-reset-pg-", pgstattuple_schema=maintenance.SCHEMA) as cluster:
            deploy.run_migrate(cluster.admin_url(names.DATABASE_NAME), verifiers)
            servers: dict[str, tuple[PgBouncerServer, int]] = {}
            for mode, (always, query) in MODES.items():
                # A directory of its own: PgBouncerServer hands it to the postgres user when run as root.
                server = PgBouncerServer(Path(tempfile.mkdtemp(prefix="dbctl-bench-reset-pgb-")))
                port = free_port()
                config = server.config(
                    primary_host=cluster.host,
                    primary_port=cluster.port,
                    listen_port=port,
                    server_reset_query_always=always,
                    server_reset_query=query,
                    server_tls=ServerTls(sslmode="verify-full", ca_file=str(cluster.ca_file)),
                    client_tls=ClientTls(
                        sslmode="require", key_file=str(cluster.key_file), cert_file=str(cluster.cert_file)
                    ),
                )
                server.start(config, {users[role]: verifiers[users[role]] for role in POOLED_ROLES})
                servers[mode] = (server, port)
            try:
                for _ in range(args.rounds):
                    for name in SCRIPTS:
                        for mode, (_, port) in servers.items():
                            result = pgbench(
                                port,
                                passwords[names.APP_ROLE],
                                scratch / f"{name}.sql",
                                args.clients,
                                args.seconds,
                            )
                            figures.setdefault((name, mode), []).append(result)
            finally:
                for server, _ in servers.values():
                    server.stop()
                    shutil.rmtree(server.directory, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"PgBouncer transaction pool, {args.clients} clients, {args.rounds} alternating rounds of "
        f"{args.seconds} s, medians:"
    )
    print(f"{'script':<10} {'reset':<12} {'TPS':>9} {'avg ms':>8} {'x off':>6}  runs (TPS)")
    for name in SCRIPTS:
        off = statistics.median(t for t, _ in figures[(name, "off")])
        for mode in MODES:
            runs = figures[(name, mode)]
            tps = statistics.median(t for t, _ in runs)
            latency = statistics.median(lat for _, lat in runs)
            listed = ", ".join(f"{t:.0f}" for t, _ in runs)
            print(f"{name:<10} {mode:<12} {tps:9.0f} {latency:8.2f} {tps / off:6.2f}  {listed}")
    for mode, (always, query) in MODES.items():
        print(f"{mode}: server_reset_query_always={int(always)}, server_reset_query = {query}")


if __name__ == "__main__":
    main()
