"""The Spike Land app's own toolchain against a throwaway local stack (issue 10 §5): tests/e2e in Node.

One test, because one stack serves the whole Node suite (about a minute): it brings up `dbctl local` in a
temp dir on free ports, installs tests/e2e's locked packages (`npm ci`, only when package-lock.json changed),
generates the Prisma 7 client, and runs the Node tests with the stack's `.env` URLs exactly as written (no
TLS option, no rewriting). Then, as the seed's workflow goes on, `dbctl migrate` applies the migration that
`prisma migrate dev --create-only` wrote, and `dbctl status` sees what `prisma migrate deploy` left.

Needs Node.js >= 20.19 and npm (./dev installs them with apt) and the npm registry or npm's cache.
It fails, never skips, when they are missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbctl.local.env import libpq_url, read_env
from dbctl.local.lifecycle import throwaway_stack
from dbctl.local.migrations import login_verifiers
from dbctl.local.stack import Stack
from dbctl.schema import deploy
from tests.integration.helpers import node_tool

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
E2E = REPO / "tests" / "e2e"
NODE_MIN = (20, 19)  # Prisma 7's engines field: ^20.19 || ^22.12 || >=24
STAMP = E2E / "node_modules" / ".installed-from-lock.sha256"


def _tool(name: str) -> str:
    path = node_tool(name)
    if path is None:
        pytest.fail(f"{name} not found: tests/e2e needs Node.js >= 20.19 and npm: `./dev test` installs them")
    return path


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        argv, cwd=E2E, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv[:3])} … exited {result.returncode}:\n{output[-6000:]}"
    return output


def install_e2e_packages() -> None:
    """`npm ci` (exactly package-lock.json, no install scripts) unless node_modules came from this lock."""
    node = _tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(part) for part in version.strip().lstrip("v").split(".")[:2])
    if (major, minor) < NODE_MIN:
        pytest.fail(f"Node.js {version.strip()} is too old for Prisma 7: install Node.js >= 20.19")
    lock = hashlib.sha256((E2E / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text().strip() == lock):
        # --ignore-scripts: Prisma's postinstall would fetch native engines from its CDN; none is needed.
        _run([_tool("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"])
        STAMP.write_text(lock + "\n")
    _run([node, "src/generate.mjs"])


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # replica=False: the e2e suite's read tests (read.test.ts) expect a write to show at once through the
    # read client and a permission error on writes there, i.e. the read pool on the primary.
    with throwaway_stack("dbctl-test-e2e-", replica=False) as stack:
        yield stack


def node_summary(output: str) -> dict[str, int]:
    """node:test's closing counters: tests, pass, fail, cancelled, skipped, todo."""
    return {key: int(value) for key, value in re.findall(r"^# (\w+) (\d+)$", output, re.MULTILINE)}


@pytest.mark.timeout(900)  # npm ci on a cold cache, then the Node suite (about a minute on a quiet machine)
def test_the_apps_toolchain_against_a_local_stack(stack: Stack, tmp_path: Path) -> None:
    install_e2e_packages()
    dotenv = read_env(stack.paths)
    work = tmp_path / "e2e"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PG", "NODE_", "PRISMA_"))},
        **dotenv,  # exactly as `dbctl local up` wrote them
        "E2E_WORK_DIR": str(work),
    }
    files = sorted(str(p.relative_to(E2E)) for p in (E2E / "test").glob("*.test.ts"))
    output = _run(
        [_tool("node"), "--import", "tsx", "--test", "--test-concurrency=1", *files], env=env, timeout=600
    )
    print(output)  # pytest -s shows the Node suite's own report and its figures
    summary = node_summary(output)
    assert summary["tests"] > 0 and summary["pass"] == summary["tests"], summary
    assert summary["fail"] == summary["cancelled"] == summary["skipped"] == summary["todo"] == 0, summary

    # `prisma migrate dev --create-only` wrote the next migration into the folder; dbctl applies it.
    migrations = work / "migrations"
    added = sorted(p.name for p in migrations.iterdir() if p.name.endswith("_add_note"))
    assert len(added) == 1, sorted(p.name for p in migrations.iterdir())
    admin = stack.cluster.admin_url()
    verifiers = login_verifiers(stack.creds)
    report = deploy.run_migrate(admin, verifiers, migrations_dir=migrations)
    assert report.applied == added
    status = deploy.status(admin, verifiers, migrations_dir=migrations)
    assert not status.changed, status.as_dict()  # Prisma's and dbctl's objects all belong to spike_owner
    with psycopg.connect(libpq_url(dotenv["DATABASE_URL"])) as app:
        app.execute('INSERT INTO "Note" (id, body) VALUES (%s, %s)', ("n1", "applied by dbctl"))
        assert app.execute('SELECT body FROM "Note"').fetchall() == [("applied by dbctl",)]

    # Against the repository's own folder, the two migrations made by Prisma are drift: no file here.
    status = deploy.status(admin, verifiers)
    assert status.changed
    assert [line.split(" is in ")[0] for line in status.drift] == [
        "migration 20261130000000_add_tag",
        f"migration {added[0]}",
    ]
    assert status.role_changes == [] and status.pending == [] and status.failed == []
