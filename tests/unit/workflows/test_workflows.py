"""The GitHub workflows users run: the properties the schema and zizmor (run by ./dev test) do not pin down.

What runs when, that deploys never overlap or get cancelled, that prod waits for its environment, that every
action is pinned to a commit, that the Pulumi CLI matches the SDK in uv.lock, and that every `run:` script
passes shellcheck and takes no `${{ }}` expression (inputs reach scripts through env, never inline).
"""

import json
import re
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.shell import assert_shellcheck_clean

ROOT = Path(__file__).resolve().parents[3]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert isinstance(on, dict)
    return on


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return str(next(p["version"] for p in lock["package"] if p["name"] == package))


def test_the_expected_workflows_exist() -> None:
    assert [f.name for f in FILES] == ["deploy-stack.yml", "deploy.yml", "pull-request.yml", "test.yml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    for line in path.read_text().splitlines():
        match = re.search(r"uses:\s*(\S+)", line)
        if not match or match.group(1).startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", match.group(1)), line
        assert re.search(r"#\s*v\d+\.\d+\.\d+\s*$", line), f"no `# vX.Y.Z` comment: {line}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    assert workflow["permissions"] == {}, "grant nothing at the top; each job asks for what it needs"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"job {name} has no permissions block"
        assert set(job["permissions"].values()) <= {"read", "write"}
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        assert writes <= {"id-token", "pull-requests"}, f"job {name} writes {writes}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkouts_do_not_persist_the_token(path: Path) -> None:
    for step in steps(yaml.safe_load(path.read_text())):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False


def test_pull_requests_run_the_tests_then_preview_both_stacks_with_the_policy_pack() -> None:
    workflow = load("pull-request.yml")
    assert set(triggers(workflow)) == {"pull_request"}
    jobs = workflow["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/test.yml"
    preview = jobs["preview"]
    assert preview["needs"] == "test"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert preview["permissions"]["id-token"] == "write"
    [pulumi] = [s for s in preview["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["comment-on-pr"] is True


def test_pull_requests_lint_changed_migrations_with_the_locked_squawk_and_no_token() -> None:
    job = load("pull-request.yml")["jobs"]["migration-lint"]
    assert job["permissions"] == {"contents": "read"}  # annotations and the job summary need no token
    scripts = "\n".join(str(step.get("run", "")) for step in job["steps"])
    assert 'git diff --quiet "$BASE_SHA" HEAD -- sql/migrations prisma .squawk.toml tools/squawk' in scripts
    assert "npm ci --ignore-scripts --no-audit --no-fund --prefix tools/squawk" in scripts
    [lint] = [step for step in job["steps"] if "dbctl migrate lint" in str(step.get("run", ""))]
    assert lint["run"].strip().endswith('.venv/bin/python -m dbctl migrate lint --github "${changed[@]}"')
    assert lint["if"] == "steps.changes.outputs.lint == 'true'"
    package = json.loads((ROOT / "tools" / "squawk" / "package.json").read_text())
    lock = json.loads((ROOT / "tools" / "squawk" / "package-lock.json").read_text())
    pinned = package["dependencies"]["squawk-cli"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "an exact version, as the lock has it"
    assert lock["packages"]["node_modules/squawk-cli"]["version"] == pinned


def test_the_lint_step_names_the_migrations_the_pr_adds_or_edits(tmp_path: Path) -> None:
    """The step's script against a real git history: only the new and the edited migration are passed."""
    job = load("pull-request.yml")["jobs"]["migration-lint"]
    [script] = [str(s["run"]) for s in job["steps"] if "dbctl migrate lint" in str(s.get("run", ""))]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    migrations = tmp_path / "sql" / "migrations"
    for name in ("20260101000000_old", "20260102000000_edited"):
        (migrations / name).mkdir(parents=True)
        (migrations / name / "migration.sql").write_text("SELECT 1;\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    (migrations / "20260102000000_edited" / "migration.sql").write_text("SELECT 2;\n")
    (migrations / "20260103000000_new").mkdir()
    (migrations / "20260103000000_new" / "migration.sql").write_text("SELECT 3;\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "pr"], check=True)
    fake = tmp_path / ".venv" / "bin"
    fake.mkdir(parents=True)
    (fake / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake / "python").chmod(0o755)
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "BASE_SHA": base.strip()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "-m",
        "dbctl",
        "migrate",
        "lint",
        "--github",
        "20260102000000_edited",
        "20260103000000_new",
    ]


def test_the_test_workflow_runs_the_readme_command() -> None:
    workflow = load("test.yml")
    assert set(triggers(workflow)) == {"workflow_call"}
    assert any(step.get("run") == "./dev test" for step in steps(workflow))


def test_main_deploys_dev_then_prod_and_each_runs_the_post_deploy_step() -> None:
    workflow = load("deploy.yml")
    assert triggers(workflow) == {"push": {"branches": ["main"]}}
    jobs = workflow["jobs"]
    assert jobs["dev"]["needs"] == "test" and jobs["prod"]["needs"] == "dev"
    for stack in ("dev", "prod"):
        assert jobs[stack]["uses"] == "./.github/workflows/deploy-stack.yml"
        assert jobs[stack]["with"] == {"stack": stack}

    [job] = load("deploy-stack.yml")["jobs"].values()
    assert job["environment"] == "${{ inputs.stack }}"  # prod's required reviewers live there
    assert job["concurrency"] == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
    [pulumi] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["policyPacks"] == "policy"
    migrate = job["steps"][job["steps"].index(pulumi) + 1]
    assert 'python -m dbctl migrate --stack "$STACK"' in migrate["run"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_pulumi_cli_matches_the_locked_sdk(path: Path) -> None:
    version = yaml.safe_load(path.read_text()).get("env", {}).get("PULUMI_VERSION")
    if version is not None:
        assert version == locked_version("pulumi")


def run_scripts() -> list[tuple[str, str]]:
    found = []
    for path in FILES:
        for job_name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if "run" in step:
                    found.append((f"{path.name}:{job_name}:{i}", step["run"]))
    return found


@pytest.mark.parametrize(("where", "script"), run_scripts(), ids=[w for w, _ in run_scripts()])
def test_run_scripts_take_no_expressions_and_pass_shellcheck(where: str, script: str) -> None:
    assert "${{" not in script, f"{where}: pass values through env:, not inline (template injection)"
    assert_shellcheck_clean(script, where)


# --- the deploy's migrate script, run for real against stand-ins for pulumi, aws, curl and uv --------------

STUBS = {
    "pulumi": """#!/usr/bin/env bash
echo '{"primary_address": "db.abc.eu-west-1.rds.amazonaws.com", "primary_port": 5432,
       "pgbouncer_security_group_id": "sg-0pgb", "master_secret_arn": "[secret]"}'
""",
    "aws": """#!/usr/bin/env bash
echo "aws $*" >>"$CALLS"
case "$1 $2" in
  "ec2 describe-instances") echo "${STUB_INSTANCE:-i-0123456789abcdef0}" ;;
  "ssm describe-instance-information")
    # STUB_PING: the PingStatus of each successive call (the last one repeats); "FAIL" fails the call.
    n=$(($(cat "$CALLS.ping" 2>/dev/null || echo 0) + 1)); echo "$n" >"$CALLS.ping"
    read -ra seq <<<"${STUB_PING:-Online}"
    status=${seq[$(( n <= ${#seq[@]} ? n - 1 : ${#seq[@]} - 1 ))]}
    [ "$status" = FAIL ] && { echo "ThrottlingException: Rate exceeded" >&2; exit 254; }
    echo "$status" ;;
  "ssm start-session")
    [ -n "${STUB_TUNNEL_FAILS:-}" ] && { echo "TargetNotConnected: i-0123456789abcdef0"; exit 254; }
    while [ "$1" != --parameters ]; do shift; done
    port=$(printf '%s' "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["localPortNumber"][0])')
    exec python3 -c 'import socket,sys,time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True: s.accept()' "$port" ;;
esac
""",
    "curl": """#!/usr/bin/env bash
echo "curl $*" >>"$CALLS"
while [ $# -gt 0 ]; do [ "$1" = -o ] && { echo CA >"$2"; }; shift; done
""",
    "uv": """#!/usr/bin/env bash
echo "uv $*" >>"$CALLS"
""",
}


def migrate_script() -> str:
    [job] = load("deploy-stack.yml")["jobs"].values()
    [step] = [s for s in job["steps"] if "dbctl migrate" in s.get("run", "")]
    return str(step["run"])


def run_migrate_script(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    with socket.socket() as s:  # a free port for the tunnel's local end
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    calls = tmp_path / "calls"
    calls.touch()
    result = subprocess.run(
        ["bash", "-c", migrate_script()],
        env={
            **load("deploy-stack.yml")["env"],  # the workflow's own settings (timeouts, ports)
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "STACK": "dev",
            "TUNNEL_PORT": str(port),
            "RUNNER_TEMP": str(tmp_path),
            "AWS_REGION": "eu-west-1",
            "CALLS": str(calls),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, calls.read_text()


def test_the_migrate_script_tunnels_to_the_primary_then_migrates_through_it(tmp_path: Path) -> None:
    result, calls = run_migrate_script(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = calls.splitlines()
    assert lines[0] == (
        "aws ec2 describe-instances --filters Name=instance.group-id,Values=sg-0pgb "
        "Name=instance-state-name,Values=running --query Reservations[].Instances[].InstanceId | [0] "
        "--output text"
    )
    assert lines[1] == PING_CALL
    assert "truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem" in lines[2]
    tunnel = lines[3]
    assert tunnel.startswith("aws ssm start-session --target i-0123456789abcdef0 ")
    assert '"host":["db.abc.eu-west-1.rds.amazonaws.com"],"portNumber":["5432"]' in tunnel
    port = json.loads(tunnel.split("--parameters ", 1)[1])["localPortNumber"][0]
    assert lines[4] == (
        f"uv run --frozen python -m dbctl migrate --stack dev --via 127.0.0.1:{port} "
        f"--ssl-root-cert {tmp_path}/rds-ca.pem"
    )
    assert tunnel_closes(int(port)), "the script left its SSM session running"


PING_CALL = (
    "aws ssm describe-instance-information --filters Key=InstanceIds,Values=i-0123456789abcdef0 "
    "--query InstanceInformationList[0].PingStatus --output text"
)


def test_the_migrate_script_waits_for_the_hosts_ssm_agent_before_the_tunnel(tmp_path: Path) -> None:
    # A first deploy: the agent is not registered yet (no entry: None), then lost, then a failed call.
    result, calls = run_migrate_script(
        tmp_path, STUB_PING="None ConnectionLost FAIL Online", SSM_POLL_SECONDS="0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = calls.splitlines()
    assert lines[1:5] == [PING_CALL] * 4
    assert lines[6].startswith("aws ssm start-session --target i-0123456789abcdef0 ")
    assert "waiting for the SSM agent on i-0123456789abcdef0 (PingStatus: ConnectionLost)" in result.stdout
    assert "(PingStatus: unknown (ThrottlingException: Rate exceeded))" in result.stdout


def test_the_migrate_script_gives_up_on_an_agent_that_never_comes_online(tmp_path: Path) -> None:
    result, calls = run_migrate_script(tmp_path, STUB_PING="None", SSM_ONLINE_TIMEOUT="0")
    assert result.returncode == 1
    assert (
        "::error::the SSM agent on i-0123456789abcdef0 is not Online after 0s (PingStatus: None)"
        in result.stdout
    )
    assert "start-session" not in calls and "dbctl" not in calls


def test_the_wait_for_the_agent_fits_the_job_and_the_deploy_role_covers_the_job() -> None:
    workflow = load("deploy-stack.yml")
    [job] = workflow["jobs"].values()
    assert 0 < int(workflow["env"]["SSM_POLL_SECONDS"]) < int(workflow["env"]["SSM_ONLINE_TIMEOUT"])
    assert int(workflow["env"]["SSM_ONLINE_TIMEOUT"]) < job["timeout-minutes"] * 60
    [creds] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("aws-actions/configure-aws")]
    duration = creds["with"]["role-duration-seconds"]
    # The job must not outlive its credentials, and docs/ci-cd.md must ask for a role that grants them.
    assert job["timeout-minutes"] * 60 <= duration
    ci_cd = (ROOT / "docs" / "ci-cd.md").read_text()
    assert f"--max-session-duration {duration}" in ci_cd
    assert "ssm:DescribeInstanceInformation" in ci_cd


def tunnel_closes(port: int) -> bool:
    """The script kills its background session on exit; the kill lands a moment later."""
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.05)
    return False


def test_the_migrate_script_stops_without_a_pgbouncer_host(tmp_path: Path) -> None:
    result, calls = run_migrate_script(tmp_path, STUB_INSTANCE="None")
    assert result.returncode == 1
    assert "::error::no running PgBouncer host in security group sg-0pgb" in result.stdout
    assert "dbctl" not in calls


def test_the_migrate_script_stops_with_the_tunnel_log_when_it_does_not_open(tmp_path: Path) -> None:
    result, calls = run_migrate_script(tmp_path, STUB_TUNNEL_FAILS="1")
    assert result.returncode == 1
    assert "::error::the SSM port-forward through i-0123456789abcdef0 did not open" in result.stdout
    assert "TargetNotConnected" in result.stdout
    assert "dbctl" not in calls
