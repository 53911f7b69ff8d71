"""Every core of an AWS PgBouncer host: the user data under Pulumi mocks over the real stack files (one
process in dev, two on prod's c7g.large), the auth-file refresh reloading each process, and pool metrics
summed over the processes' admin consoles."""

from __future__ import annotations

import argparse
import base64
import configparser
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components import pgbouncer_image_document as doc
from components import pgbouncer_userdata as ud
from components.pgbouncer import DEREGISTRATION_DELAY
from hosts import pool_metrics
from tests.unit.harness import RunResult, one, run, settings_for
from tests.unit.pgbouncer.test_config import parse
from tests.unit.shell import assert_parses, assert_shellcheck_clean

LT = "aws:ec2/launchTemplate:LaunchTemplate"


def script_of(result: RunResult) -> str:
    return gzip.decompress(base64.b64decode(one(result.resources, LT).inputs["userData"])).decode()


def inis(script: str) -> dict[int, configparser.ConfigParser]:
    found = {}
    for peer_id, body in re.findall(
        r"<<'SPIKE_PGBOUNCER_INI_(\d+)'\n(.*?)\nSPIKE_PGBOUNCER_INI_\1\n", script, re.S
    ):
        found[int(peer_id)] = parse(body)
    return found


@pytest.fixture(scope="module")
def prod() -> str:
    return script_of(run("prod"))


@pytest.fixture(scope="module")
def dev() -> str:
    return script_of(run("dev"))


def test_prod_hosts_run_one_process_per_vcpu_each_on_its_own_file(prod: str) -> None:
    processes = settings_for("prod").pgbouncer.processes
    files = inis(prod)
    assert list(files) == [1, 2] == list(range(1, processes + 1))
    for peer_id, ini in files.items():
        p = ini["pgbouncer"]
        assert (p["so_reuseport"], p["peer_id"], p["listen_port"]) == ("1", str(peer_id), "6543")
        assert p["unix_socket_dir"] == f"/run/pgbouncer-{peer_id}"
        assert dict(ini["peers"]) == {
            "1": "host=/run/pgbouncer-1 port=6543",
            "2": "host=/run/pgbouncer-2 port=6543",
        }
        assert p["max_client_conn"] == str(settings_for("prod").pgbouncer.max_client_conn)  # per process
        path = f"/etc/pgbouncer/pgbouncer-{peer_id}.ini"
        assert f"mv -f {path}.tmp {path}\n" in prod


def test_a_systemd_template_unit_runs_each_process_and_a_target_wants_all_of_them(prod: str) -> None:
    unit = doc.template_unit()  # the image's (InstallHostFiles), one for every stack
    assert "ExecStart=/usr/local/bin/pgbouncer /etc/pgbouncer/pgbouncer-%i.ini" in unit
    assert "RuntimeDirectory=pgbouncer-%i" in unit  # the socket dir the ini names, made for the instance
    dropin = prod.split("pgbouncer@.service.d/limits.conf <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    assert (
        dropin == f"[Service]\nLimitNOFILE={ud.nofile_limit(settings_for('prod').pgbouncer.max_client_conn)}"
    )
    assert "Restart=on-failure" in unit and "PartOf=spike-pgbouncer.target" in unit
    assert "OnFailure=spike-pgbouncer-down.service" in unit and "StartLimitBurst=5" in unit
    assert "Wants=pgbouncer@1.service pgbouncer@2.service\n" in prod
    # The host leaves the NLB: the image's unit that stops every process.
    assert "ExecStart=/usr/bin/systemctl stop spike-pgbouncer.target" in doc.down_unit()
    assert "Type=notify" in unit and "User=pgbouncer" in unit
    assert "/etc/systemd/system/pgbouncer.service" not in prod  # no single-process unit beside the template


def test_a_stop_is_pgbouncers_safe_shutdown_bounded_by_the_nlbs_deregistration_delay() -> None:
    """SIGINT lets transactions finish and exits; systemd's default SIGTERM would wait for every client
    (tests/integration/hosts/test_pgbouncer_stop_signal.py); the stop lasts what the NLB gives a client."""
    unit = doc.template_unit()
    assert "KillSignal=SIGINT\n" in unit
    assert f"TimeoutStopSec={DEREGISTRATION_DELAY}s\n" in unit


def test_the_bootstrap_checks_every_process_and_its_socket(prod: str, dev: str) -> None:
    for script, n in ((prod, 2), (dev, 1)):
        assert f"for i in $(seq 1 {n}); do\n" in script
        assert 'systemctl is-active --quiet "pgbouncer@$i.service" ||' in script
        assert "Type=notify\n" in doc.template_unit()  # active = it told systemd it listens
        assert f'log "pgbouncer is active: {n} process(es) on port 6543"' in script
    socket_check = '[ -S "/run/pgbouncer-$i/.s.PGSQL.6543" ] ||\n    fail "pgbouncer process $i has no socket'
    assert socket_check in prod
    # One process has no Unix socket (unix_socket_dir = ''): waiting for one would fail every dev boot.
    assert socket_check not in dev and "/run/pgbouncer-$i/.s.PGSQL" not in dev


def test_the_auth_file_refresh_reloads_every_process(prod: str, dev: str) -> None:
    assert "--reload-unit pgbouncer@1.service --reload-unit pgbouncer@2.service" in prod
    assert "--reload-unit pgbouncer@1.service" in dev and "pgbouncer@2" not in dev


def test_pool_metrics_read_every_process_over_its_socket(prod: str, dev: str) -> None:
    assert "--port 6543 --socket-dir /run/pgbouncer-1 --socket-dir /run/pgbouncer-2\n" in prod
    assert " --socket-dir /" not in dev  # one process: no socket, 127.0.0.1 reaches it


def test_dev_keeps_one_process_without_peering(dev: str) -> None:
    files = inis(dev)
    assert list(files) == [1]
    assert "peers" not in files[1] and "so_reuseport" not in files[1]["pgbouncer"]
    assert files[1]["pgbouncer"]["unix_socket_dir"] == ""


def test_the_prod_script_parses_and_passes_shellcheck(prod: str) -> None:
    assert_parses(prod)
    assert_shellcheck_clean(prod)


def test_the_embedded_helper_reloads_each_unit_it_is_given(tmp_path: Path) -> None:
    """The embedded helper, with a stand-in systemctl: a new auth file reloads both processes."""
    program = tmp_path / "helper"
    program.write_text((doc.HOSTS_DIR / "pgbouncer_authfile.py").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    secret = json.dumps({"username": "spike_app", "password": "pw", "scram_verifier": _verifier()})
    (bin_dir / "aws").write_text(f"#!/bin/bash\ncat <<'J'\n{secret}\nJ\n")
    (bin_dir / "systemctl").write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {calls}\n')
    for tool in ("aws", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    auth_file = tmp_path / "userlist.txt"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:spike/spike_app-AbCdEf"
    args = [sys.executable, str(program), "--region", "eu-west-1", "--auth-file", str(auth_file)]
    args += ["--owner", Path.home().owner(), "--secret", f"spike_app={arn}"]
    args += ["--reload-unit", "pgbouncer@1.service", "--reload-unit", "pgbouncer@2.service"]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == [
        "is-active --quiet pgbouncer@1.service",
        "reload pgbouncer@1.service",
        "is-active --quiet pgbouncer@2.service",
        "reload pgbouncer@2.service",
    ]
    assert "reloaded pgbouncer@1.service, pgbouncer@2.service" in done.stdout


def _verifier() -> str:
    from dbctl.core.scram import scram_verifier

    return scram_verifier("pw", os.urandom(16))


# ---- pool metrics over processes ---------------------------------------------------------------------------


def _pools(active: str, waiting: str, maxwait: str) -> list[dict[str, str]]:
    return [
        {"database": "pgbouncer", "user": "pgbouncer", "cl_active": "1", "cl_waiting": "0", "sv_active": "0",
         "sv_idle": "0", "maxwait": "0", "maxwait_us": "0"},
        {"database": "spike_land", "user": "spike_app", "cl_active": active, "cl_waiting": waiting,
         "sv_active": "10", "sv_idle": "2", "maxwait": maxwait, "maxwait_us": "0"},
    ]  # fmt: skip


def test_two_processes_pools_are_summed_and_their_averages_weighted() -> None:
    pools = _pools("7", "1", "2") + _pools("5", "0", "4")
    stats = [
        {"database": "spike_land", "avg_xact_count": "300", "avg_query_count": "300", "avg_wait_time": "1000",
         "avg_query_time": "2000"},
        {"database": "spike_land", "avg_xact_count": "100", "avg_query_count": "100", "avg_wait_time": "5000",
         "avg_query_time": "6000"},
    ]  # fmt: skip
    land = pool_metrics.per_pool(pools, stats)["spike_land"]
    assert (land["ClientsActive"], land["ClientsWaiting"], land["ServersActive"], land["ServersIdle"]) == (
        12,
        1,
        20,
        4,
    )
    assert land["MaxWaitSeconds"] == 4  # the longest wait on either process
    assert land["TransactionsPerSecond"] == 400
    assert land["AvgWaitTimeMs"] == pytest.approx((300 * 1.0 + 100 * 5.0) / 400)
    assert land["AvgQueryTimeMs"] == pytest.approx((300 * 2.0 + 100 * 6.0) / 400)
    idle = [{"database": "spike_land", "avg_xact_count": "0", "avg_query_count": "0", "avg_wait_time": "0",
             "avg_query_time": "0"}] * 2  # fmt: skip
    assert pool_metrics.per_pool(pools, idle)["spike_land"]["AvgQueryTimeMs"] == 0


def test_one_run_reads_each_process_over_its_socket_dir() -> None:
    calls: list[dict[str, Any]] = []

    def fake(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if argv[:2] == ["aws", "secretsmanager"]:
            secret = {"username": "spike_monitor_b", "password": "pw-x"}
            return subprocess.CompletedProcess(argv, 0, json.dumps(secret), "")
        if argv[0] == "psql":
            calls.append(kw["env"])
            rows = (
                _pools("3", "0", "0")
                if "SHOW POOLS" in argv
                else [{"database": "spike_land", "avg_xact_count": "1"}]
            )
            text = (
                ",".join(rows[-1]) + "\n" + "\n".join(",".join(r.get(k, "") for k in rows[-1]) for r in rows)
            )
            return subprocess.CompletedProcess(argv, 0, text + "\n", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    args = argparse.Namespace(
        stack="prod", region="eu-west-1", namespace="SpikeLandDb/prod", monitor_secret="arn:x",
        port=6543, host="h1", socket_dir=["/run/pgbouncer-1", "/run/pgbouncer-2"],
    )  # fmt: skip
    assert pool_metrics.run_once(args, fake) > 0
    assert [(env["PGHOST"], env["PGPORT"], env["PGUSER"]) for env in calls] == [
        ("/run/pgbouncer-1", "6543", "spike_monitor_b"),  # the user the secret names (rotation)
        ("/run/pgbouncer-1", "6543", "spike_monitor_b"),
        ("/run/pgbouncer-2", "6543", "spike_monitor_b"),
        ("/run/pgbouncer-2", "6543", "spike_monitor_b"),
    ]
