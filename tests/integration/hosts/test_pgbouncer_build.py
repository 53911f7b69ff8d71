"""The PgBouncer image's component document, run here for real: every ExecuteBash step, in order.

`component_document` is what Image Builder's AWSTOE runs: its `build` phase on the build instance, then its
`test` phase on an instance launched from the new AMI. Here the YAML is parsed, the parameters are filled as
AWSTOE fills `{{ Name }}`, and each step runs as its own bash script, in a temp root (`SPIKE_ROOT`) and work
directory, with the service user `postgres` (this machine has no `pgbouncer` user).

Stubbed, because they are Amazon Linux or AWS only (each logs its call; the test checks the calls):
- `dnf`, `rpm`: AL2023's package manager (this is Debian: its -dev packages and PostgreSQL 15 stand in);
- `aws s3 cp`: serves the pinned source `./dev fetch-pgbouncer` checked, and hosts/'s scripts;
- `useradd`: never reached here (the `postgres` user exists), kept so a call cannot touch this machine;
- `systemd-run`, `systemctl`: no systemd here. The stand-in does what systemd-run(1) documents for a
  Type=notify service without --no-block: it returns once the service sent READY=1 on $NOTIFY_SOCKET, and
  fails if the service exits first; `systemctl is-active` / `stop` act on that process.

Everything else is real: sha256sum, tar, Debian's patch series, configure, make, make install, PgBouncer's
own sd_notify, initdb / pg_ctl / psql of PostgreSQL 15, a SCRAM login through PgBouncer. What is not tried
here: AL2023 arm64 itself (its package names, compiler and headers) and AWSTOE (docs/verification.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import pgbouncer_image_document as doc
from components import pgbouncer_source
from dbctl.postgres.install import system_install
from dbctl.postgres.osproc import free_port

pytestmark = pytest.mark.integration

URI = "s3://spike-land-db-test-pgb-x/pgbouncer-src/"
PARAMETERS = {doc.PARAM_SOURCE_URI: URI, doc.PARAM_REGION: "eu-west-1"}

_SYSTEMD_RUN = r'''#!@PYTHON@
"""systemd-run --unit=U --property=Type=notify [--property=User=X] [--property=K=V] CMD...: start CMD with
NOTIFY_SOCKET set; return 0 once it sends READY=1, 1 if it exits first or the start times out."""
import os, socket, subprocess, sys, time
from pathlib import Path

args, unit, props = sys.argv[1:], None, {}
with open(os.environ["SPIKE_STUB_LOG"], "a") as log:
    log.write("systemd-run " + " ".join(args) + "\n")
while args and args[0].startswith("--"):
    opt = args.pop(0)
    if opt.startswith("--unit="):
        unit = opt.split("=", 1)[1]
    elif opt.startswith("--property="):
        key, value = opt.split("=", 1)[1].split("=", 1)
        props[key] = value
    else:
        sys.exit(f"systemd-run stand-in: {opt} is not supported")
if unit is None or props.get("Type") != "notify":
    sys.exit("systemd-run stand-in: only --unit=... --property=Type=notify services")
state = Path(os.environ["SPIKE_STUB_STATE"])
path = state / f"{unit}.notify"
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(str(path))
os.chmod(path, 0o777)
prefix = ["runuser", "-u", props["User"], "--"] if "User" in props else []
out = open(state / f"{unit}.log", "ab")
proc = subprocess.Popen(prefix + ["env", f"NOTIFY_SOCKET={path}", *args], stdout=out, stderr=out,
                        start_new_session=True)
(state / f"{unit}.pid").write_text(str(proc.pid))
deadline = time.monotonic() + float(props.get("TimeoutStartSec", "90s").rstrip("s"))
sock.settimeout(0.1)
while time.monotonic() < deadline:
    try:
        if b"READY=1" in sock.recv(4096).split(b"\n"):
            sys.exit(0)
    except socket.timeout:
        pass
    if proc.poll() is not None:
        sys.exit(f"Job for {unit}.service failed: the process exited with {proc.returncode}")
sys.exit(f"Job for {unit}.service failed: no READY=1 in time")
'''

_SYSTEMCTL = r'''#!@PYTHON@
"""systemctl is-active --quiet U | systemctl stop U | systemctl daemon-reload, for systemd-run's units."""
import os, signal, sys, time
from pathlib import Path

with open(os.environ["SPIKE_STUB_LOG"], "a") as log:
    log.write("systemctl " + " ".join(sys.argv[1:]) + "\n")
args = [a for a in sys.argv[1:] if a != "--quiet"]
if args == ["daemon-reload"]:
    sys.exit(0)
pid_file = Path(os.environ["SPIKE_STUB_STATE"]) / f"{args[1].removesuffix('.service')}.pid"
pid = int(pid_file.read_text()) if pid_file.exists() else None
def alive() -> bool:
    try:
        return pid is not None and os.kill(pid, 0) is None
    except ProcessLookupError:
        return False
if args[0] == "is-active":
    sys.exit(0 if alive() else 3)
if args[0] == "stop":
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGTERM)  # KillMode=control-group, KillSignal=SIGTERM (the defaults)
        except ProcessLookupError:
            pass
        for _ in range(100):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        pid_file.unlink()
    sys.exit(0)
sys.exit(f"systemctl stand-in: {args} is not supported")
'''


def _stubs(root: Path, source: pgbouncer_source.LocalSource) -> Path:
    """The stand-ins, first on PATH."""
    bin_dir = root / "stubs"
    bin_dir.mkdir()
    served = {f.name: source.path(f) for f in source.pinned.files}
    served.update({name: doc.HOSTS_DIR / name for name in doc.HOST_SCRIPTS})
    cases = "".join(f"  {name}) src={str(path)!r} ;;\n" for name, path in served.items())
    scripts = {
        "dnf": 'echo "dnf $*" >> "$SPIKE_STUB_LOG"\n',
        "rpm": 'echo "rpm $*" >> "$SPIKE_STUB_LOG"\nexit 1  # a fresh AL2023 has none of the build tools\n',
        "useradd": 'echo "useradd $*" >> "$SPIKE_STUB_LOG"\n',
        "aws": 'echo "aws $*" >> "$SPIKE_STUB_LOG"\n'
        f'[ "$1 $2" = "s3 cp" ] && [ "${{6%/*}}/" = {URI!r} ] || {{ echo "aws $*?" >&2; exit 2; }}\n'
        f'case "${{6##*/}}" in\n{cases}  *) echo "no such key: $6" >&2; exit 1 ;;\nesac\n'
        'cp "$src" "$7"\n',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\nset -eu\n" + body)
    for name, body in (("systemd-run", _SYSTEMD_RUN), ("systemctl", _SYSTEMCTL)):
        (bin_dir / name).write_text(body.replace("@PYTHON@", sys.executable))
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


def steps(document: dict[str, Any], phase: str) -> list[tuple[str, str]]:
    """(name, script) of each step of a phase, with the parameters filled as AWSTOE fills them."""
    (found,) = [p for p in document["phases"] if p["name"] == phase]
    out = []
    for step in found["steps"]:
        assert step["action"] == "ExecuteBash", step["name"]
        (script,) = step["inputs"]["commands"]
        for key, value in PARAMETERS.items():
            script = script.replace("{{ %s }}" % key, value)  # noqa: UP031
        assert "{{" not in script, f"{step['name']} has a parameter this test does not fill"
        out.append((step["name"], script))
    return out


@dataclass
class Run:
    root: Path
    env: dict[str, str]
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    unapplied_patches: list[str] | None = None

    @property
    def stub_log(self) -> list[str]:
        return Path(self.env["SPIKE_STUB_LOG"]).read_text().splitlines()

    def step(self, name: str, script: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", script], env=self.env, capture_output=True, text=True, timeout=1500, check=False
        )
        self.seconds[name] = time.monotonic() - started
        self.results[name] = done
        self.order.append(name)
        return done


def _environment(root: Path, bin_dir: Path) -> dict[str, str]:
    pg_bin = system_install().bindir
    state = root / "state"
    state.mkdir(mode=0o755)
    return {
        "PATH": f"{bin_dir}:{pg_bin}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(root),
        "LC_ALL": "C",
        "SPIKE_ROOT": str(root / "image"),
        "SPIKE_IMAGE_WORK": str(root / "work"),
        "SPIKE_SERVICE_USER": "postgres",
        "SPIKE_TEST_PG_PORT": str(free_port()),
        "SPIKE_TEST_PGB_PORT": str(free_port()),
        "SPIKE_STUB_LOG": str(root / "stub.log"),
        "SPIKE_STUB_STATE": str(state),
    }


def _unapplied_patches(tree: Path) -> list[str]:
    """Debian's patches that do not reverse cleanly (a patch that reverses was applied, and only once)."""
    series = [
        line.split()[0]
        for line in (tree / "debian" / "patches" / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(name.startswith("CVE-") for name in series)  # the backported security fixes
    return [
        name
        for name in series
        if subprocess.run(
            ["patch", "-p1", "--dry-run", "--reverse", "--force", "-i", f"debian/patches/{name}"],
            cwd=tree,
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ]


def _cleanup(run: Run) -> None:
    """What a failed test phase leaves running: the test PgBouncer and the test PostgreSQL."""
    subprocess.run(["systemctl", "stop", doc.TEST_UNIT], env=run.env, capture_output=True, check=False)
    pgdata = Path(run.env["SPIKE_IMAGE_WORK"]) / "pg"
    if (pgdata / "postmaster.pid").exists():
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_ctl", "-D", str(pgdata), "-m", "immediate", "stop"],
            env=run.env,
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="module")
def image() -> Iterator[Run]:
    """Both phases of the component, every step in order, as Image Builder runs them."""
    source = pgbouncer_source.verified_source(pgbouncer_source.pinned().version)
    document = yaml.safe_load(doc.component_document(source.pinned))
    # Not pytest's tmp_path: as root it sits under a 0700 dir the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="dbctl-test-image-"))
    root.chmod(0o755)
    run = Run(root=root, env=_environment(root, _stubs(root, source)))
    try:
        for phase in ("build", "test"):
            for name, script in steps(document, phase):
                done = run.step(name, script)
                assert done.returncode == 0, f"{phase}.{name} failed:\n{done.stdout}\n{done.stderr}"
                if name == "BuildPinnedPgBouncer":
                    tree = Path(run.env["SPIKE_IMAGE_WORK"]) / "src" / f"pgbouncer-{source.pinned.version}"
                    run.unapplied_patches = _unapplied_patches(tree)
        print("image steps here (s): " + ", ".join(f"{k} {v:.0f}" for k, v in run.seconds.items()))
        yield run
    finally:
        _cleanup(run)
        shutil.rmtree(root, ignore_errors=True)


def test_every_step_of_both_phases_ran_in_order(image: Run) -> None:
    document = yaml.safe_load(doc.component_document(pgbouncer_source.pinned()))
    expected = [name for phase in ("build", "test") for name, _ in steps(document, phase)]
    assert image.order == expected and len(expected) == 10
    assert [p["name"] for p in document["phases"]] == ["build", "test"]


def test_the_image_holds_the_pinned_release_with_systemd_c_ares_and_openssl(image: Run) -> None:
    binary = Path(image.env["SPIKE_ROOT"] + doc.PGBOUNCER_BIN)
    lines = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert lines.splitlines()[0] == f"PgBouncer {pgbouncer_source.pinned().version}"
    assert "systemd: yes" in lines.splitlines()


def test_every_debian_patch_was_applied(image: Run) -> None:
    assert image.unapplied_patches == []


def test_the_image_carries_the_host_scripts_and_the_units(image: Run) -> None:
    root = image.env["SPIKE_ROOT"]
    for name, path in doc.HOST_SCRIPTS.items():
        assert Path(root + path).read_bytes() == (doc.HOSTS_DIR / name).read_bytes()
        assert os.access(root + path, os.X_OK)
    unit = Path(root, "etc/systemd/system/pgbouncer@.service").read_text()
    assert unit == doc.template_unit() and "KillSignal=SIGINT\n" in unit
    assert not Path(image.env["SPIKE_IMAGE_WORK"]).exists()  # no source, build log or test state left


def test_packages_come_and_the_build_tools_go(image: Run) -> None:
    log = image.stub_log
    build = " ".join(doc.BUILD_PACKAGES)
    assert f"dnf install -y -q {' '.join(doc.RUNTIME_PACKAGES)} {doc.PSQL_PACKAGE}" in log
    assert f"dnf install -y -q {build}" in log and f"dnf remove -y -q {build}" in log
    assert log.index(f"dnf install -y -q {build}") < log.index(f"dnf remove -y -q {build}")
    assert f"dnf install -y -q {doc.TEST_SERVER_PACKAGE}" in log  # the test instance's PostgreSQL only
    assert not any(line.startswith("useradd") for line in log)  # the stand-in user exists here


def test_the_test_phase_started_pgbouncer_as_a_notify_unit_and_logged_in_with_scram(image: Run) -> None:
    log = image.stub_log
    assert any(line.startswith(f"systemd-run --unit={doc.TEST_UNIT} --property=Type=notify") for line in log)
    assert f"systemctl is-active --quiet {doc.TEST_UNIT}" in log
    assert (
        image.results["ScramLoginThroughPgBouncer"].stdout
        == f"SCRAM login through pgbouncer as {doc.TEST_ROLE}\n"
    )
    assert f"systemctl stop {doc.TEST_UNIT}" in log


def test_a_broken_image_fails_its_test_phase(image: Run, tmp_path: Path) -> None:
    """An image whose binary is another release fails the first test step: the image, not a host."""
    root = tmp_path / "broken"
    shutil.copytree(image.env["SPIKE_ROOT"], root, symlinks=True)
    fake = root / doc.PGBOUNCER_BIN.lstrip("/")
    fake.write_text("#!/bin/sh\nprintf 'PgBouncer 1.23.0\\nsystemd: yes\\n'\n")
    document = yaml.safe_load(doc.component_document(pgbouncer_source.pinned()))
    name, script = steps(document, "test")[0]
    done = subprocess.run(
        ["bash", "-c", script], env={**image.env, "SPIKE_ROOT": str(root)}, capture_output=True, text=True
    )
    version = pgbouncer_source.pinned().version
    assert (name, done.returncode) == ("PinnedReleaseWithItsFeatures", 1)
    assert (
        done.stderr
        == f"spike-pgbouncer-image: FAILED: the image's pgbouncer is not {version}: PgBouncer 1.23.0\n"
    )


@pytest.mark.parametrize(
    ("configured", "accepted"), [("1.24", True), ("1.24.1", True), ("1.25", False), ("1.2", False)]
)
def test_the_version_check_accepts_the_pinned_release_only(
    image: Run, configured: str, accepted: bool
) -> None:
    script = (
        doc.PRELUDE
        + f"PGBOUNCER_VERSION={configured}\n"
        + doc.version_check(image.env["SPIKE_ROOT"] + doc.PGBOUNCER_BIN)
        + 'echo "accepted $built"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    version = pgbouncer_source.pinned().version
    if accepted:
        assert (done.returncode, done.stdout) == (0, f"accepted {version}\n"), done.stderr
    else:
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == (
            f"spike-pgbouncer-image: FAILED: pgbouncer {version} was built, but pgbouncer.ini was rendered "
            f"for {configured}\n"
        )
