"""The PgBouncer hosts' user data and its auth-file helper: pure rendering, shellcheck, the bootstrap run with
stand-ins (a failure abandons the launch hook), and the helper run for real (in-process against moto's
Secrets Manager, and as the file the image installs, with a stand-in `aws`)."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws

from components import pgbouncer_image_document as doc
from components import pgbouncer_userdata as ud
from dbctl.core import names
from dbctl.core.scram import scram_verifier
from hosts import pgbouncer_authfile as helper
from tests.unit.shell import assert_parses, assert_shellcheck_clean

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ROLES = (names.APP_ROLE, names.READONLY_ROLE, names.MONITOR_ROLE)
ARNS = {role: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:spike/{role}-AbCdEf" for role in ROLES}
TLS_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:spike/pgbouncer-tls-AbCdEf"
INI = """\
[databases]
spike_land = host=primary.example port=5432 dbname=spike_land
[pgbouncer]
listen_port = 6543
auth_type = scram-sha-256
auth_file = /run/pgbouncer-auth/userlist.txt
max_client_conn = 1000
"""


def config(**overrides: object) -> ud.HostConfig:
    values: dict[str, object] = {
        "region": REGION,
        "pgbouncer_inis": (INI,),
        "pgbouncer_version": "1.24",
        "role_secret_arns": ARNS,
        "ca_bundle_s3_uri": "s3://spike-land-db-ca-1a2b3c/rds-ca/eu-west-1-bundle.pem",
        "max_client_conn": 1000,
        "client_tls_secret_arn": TLS_ARN,
        "launch_hook": ud.LaunchHook(group_name="spike-pgb-dev-hosts", hook_name="spike-pgbouncer-bootstrap"),
    }
    values.update(overrides)
    return ud.HostConfig(**values)  # type: ignore[arg-type]


def helper_source() -> str:
    """The auth-file helper exactly as the image installs it (InstallHostFiles copies this file)."""
    return (doc.HOSTS_DIR / "pgbouncer_authfile.py").read_text(encoding="utf-8")


def heredoc(script: str, tag: str) -> str:
    m = re.search(rf"<<'{tag}'\n(.*?)\n{tag}\n", script, re.S)
    assert m, f"no heredoc {tag}"
    return m.group(1) + "\n"


# ---- rendering -------------------------------------------------------------------------------------------


def test_script_holds_the_settings() -> None:
    script = ud.render_user_data(config())
    assert script.startswith("#!/bin/bash\n")
    assert heredoc(script, "SPIKE_PGBOUNCER_INI_1") == INI  # the renderer's output, verbatim
    assert "readonly REGION=eu-west-1" in script
    assert "readonly PGBOUNCER_VERSION=1.24" in script
    assert f"LimitNOFILE={2 * 1000 + ud.NOFILE_MARGIN}" in script
    # PgBouncer runs in the foreground on our config (the image's template unit), not the package's unit.
    assert f"\nExecStart={doc.PGBOUNCER_BIN} {doc.CONFIG_FILE}\n" in doc.template_unit()
    assert doc.CONFIG_FILE.endswith("-%i.ini") and "Restart=on-failure" in doc.template_unit()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in doc.template_unit()
    assert f"OnUnitActiveSec={ud.AUTH_REFRESH_INTERVAL}" in script
    assert f"--auth-file {ud.AUTH_FILE}" in script and ud.AUTH_FILE.startswith("/run/")
    for role, arn in ARNS.items():
        assert f"--secret {role}={arn}" in script
    assert "aws s3 cp" in script and "s3://spike-land-db-ca-1a2b3c/rds-ca/eu-west-1-bundle.pem" in script
    assert ud.CLIENT_TLS_KEY_FILE in script


def test_limit_nofile_follows_max_client_conn() -> None:
    script = ud.render_user_data(config(max_client_conn=5000))
    assert "LimitNOFILE=11024" in script
    assert ud.nofile_limit(5000) >= 2 * 5000


def test_client_tls_comes_from_its_secret_to_tmpfs_never_made_on_the_host() -> None:
    script = ud.render_user_data(config())
    assert f"--tls-secret {TLS_ARN}" in script
    assert f"--tls-key-file {ud.CLIENT_TLS_KEY_FILE} --tls-cert-file {ud.CLIENT_TLS_CERT_FILE}" in script
    assert ud.CLIENT_TLS_KEY_FILE.startswith(ud.AUTH_DIR + "/") and ud.AUTH_DIR.startswith("/run/")
    assert not re.search(r"\bopenssl (req|genpkey|genrsa|x509|ecparam)\b", script)  # no key made here
    assert "PRIVATE KEY" not in script.replace(helper_source(), "")


def test_client_tls_off_makes_no_certificate() -> None:
    script = ud.render_user_data(config(client_tls_secret_arn=None))
    assert "openssl req" not in script and "--tls-secret arn:" not in script
    assert ud.CLIENT_TLS_KEY_FILE not in script


def test_the_helper_is_the_images_not_the_user_datas() -> None:
    script = ud.render_user_data(config())
    assert "SPIKE_AUTHFILE_HELPER" not in script and "def main(" not in script
    assert f"ExecStart=/usr/bin/python3 {doc.HELPER_PATH} " in script
    assert doc.HOST_SCRIPTS["pgbouncer_authfile.py"] == doc.HELPER_PATH


def test_no_secret_and_no_tracing_in_the_script() -> None:
    script = ud.render_user_data(config())
    assert not re.search(r"SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$", script)  # no verifier
    assert not re.search(r"set -[a-z]*x", script.replace("set +x", ""))
    # The only key the helper reads from a secret is the verifier; the plaintext key is never looked up.
    source = helper_source()
    assert f'VERIFIER_KEY = "{names.SECRET_VERIFIER_KEY}"' in source
    assert not re.search(r"""\[\s*["']password["']\s*\]|get\(\s*["']password["']""", source)


def test_deterministic() -> None:
    assert ud.render_user_data(config()) == ud.render_user_data(config())
    assert ud.encode_user_data(ud.render_user_data(config())) == ud.encode_user_data(
        ud.render_user_data(config())
    )


def test_encoded_user_data_round_trips_within_the_ec2_limit() -> None:
    script = ud.render_user_data(config())
    packed = base64.b64decode(ud.encode_user_data(script))
    assert len(packed) <= ud.USER_DATA_LIMIT
    assert gzip.decompress(packed).decode() == script
    print(f"user data: {len(script)} bytes, {len(packed)} gzipped")


def test_oversized_user_data_is_refused() -> None:
    noise = base64.b64encode(os.urandom(20_000)).decode()
    with pytest.raises(ValueError, match="over EC2's 16384"):
        ud.encode_user_data(noise)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pgbouncer_version": "latest"}, "not a version"),
        ({"role_secret_arns": {}}, "role_secret_arns is empty"),
        ({"role_secret_arns": {"spike_app": "arn:aws:s3:::bucket"}}, "not a Secrets Manager secret ARN"),
        ({"role_secret_arns": {"Bad Role": ARNS["spike_app"]}}, "not a PostgreSQL role name"),
        ({"ca_bundle_s3_uri": "https://example.com/ca.pem"}, "not an s3://bucket/key URI"),
        ({"max_client_conn": 0}, "max_client_conn must be >= 1"),
        ({"launch_hook": ud.LaunchHook("spike pgb", "hook")}, "are not ASG names"),
        ({"pgbouncer_inis": (INI + "SPIKE_PGBOUNCER_INI_1\n",)}, "heredoc delimiter"),
    ],
)
def test_bad_input_is_refused_with_a_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ud.render_user_data(config(**overrides))


@pytest.mark.parametrize("client_tls", [True, False])
def test_shellcheck_passes(client_tls: bool) -> None:
    script = ud.render_user_data(config(client_tls_secret_arn=TLS_ARN if client_tls else None))
    assert_parses(script)
    assert_shellcheck_clean(script)


# ---- the auth-file helper --------------------------------------------------------------------------------


# The stand-in `aws` has one version per secret, AWSCURRENT: others are not found, as the real CLI says.
AWS_STUB_STAGES = (
    'case "$*" in *AWSCURRENT*) ;; *) echo "An error occurred (ResourceNotFoundException) when calling the '
    "GetSecretValue operation: Secrets Manager can't find the specified secret value for staging label\" >&2;"
    " exit 254;; esac\n"
)


def secret_document(role: str, password: str, username: str | None = None) -> dict[str, str]:
    return {
        names.SECRET_USERNAME_KEY: username or role,
        names.SECRET_PASSWORD_KEY: password,
        names.SECRET_VERIFIER_KEY: scram_verifier(password, salt=role.encode().ljust(16, b"s")),
    }


@pytest.fixture
def secretsmanager() -> Iterator[tuple[helper.SecretFetcher, dict[str, str], dict[str, str]]]:
    """moto Secrets Manager with one secret per login role; yields (fetcher, role->arn, role->password)."""
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        arns, passwords = {}, {}
        for role in ROLES:
            passwords[role] = f"plain-{role}-pw"
            made = client.create_secret(
                Name=f"spike/{role}", SecretString=json.dumps(secret_document(role, passwords[role]))
            )
            arns[role] = made["ARN"]

        def fetch(arn: str, stage: str) -> str | None:
            try:
                return str(client.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"])
            except client.exceptions.ResourceNotFoundException:
                return None

        yield fetch, arns, passwords


def test_helper_writes_only_verifiers_from_secrets_manager(
    secretsmanager: tuple[helper.SecretFetcher, dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    fetch, arns, passwords = secretsmanager
    text = helper.render(list(arns.items()), fetch)
    for role in ROLES:
        verifier = secret_document(role, passwords[role])[names.SECRET_VERIFIER_KEY]
        assert f'"{role}_a" "{verifier}"\n' in text  # its username is the role: the single-user layout
        assert passwords[role] not in text
    auth_file = tmp_path / "userlist.txt"
    owner = Path.home().owner()
    assert helper.write_if_changed(str(auth_file), text, owner) is True
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert auth_file.read_text() == text
    assert helper.write_if_changed(str(auth_file), text, owner) is False  # unchanged: no reload
    assert [p.name for p in tmp_path.iterdir()] == ["userlist.txt"]  # no temp file left behind


def test_helper_refuses_a_plaintext_in_the_verifier_key(
    secretsmanager: tuple[helper.SecretFetcher, dict[str, str], dict[str, str]],
) -> None:
    fetch, arns, _ = secretsmanager

    def tampered(arn: str, stage: str) -> str | None:
        doc = json.loads(fetch(arn, stage) or "{}")
        doc[names.SECRET_VERIFIER_KEY] = "hunter2-plaintext"
        return json.dumps(doc)

    with pytest.raises(helper.AuthFileError) as caught:
        helper.render(list(arns.items()), tampered)
    message = str(caught.value)
    assert names.APP_ROLE in message and "scram_verifier" in message
    assert "hunter2" not in message


def test_helper_refuses_a_secret_without_a_verifier(
    secretsmanager: tuple[helper.SecretFetcher, dict[str, str], dict[str, str]],
) -> None:
    _, arns, _ = secretsmanager

    def password_only(arn: str, stage: str) -> str:
        return json.dumps({names.SECRET_USERNAME_KEY: "x", names.SECRET_PASSWORD_KEY: "hunter2"})

    with pytest.raises(helper.AuthFileError, match="no SCRAM-SHA-256 verifier") as caught:
        helper.render(list(arns.items()), password_only)
    assert "hunter2" not in str(caught.value)


def test_helper_holds_every_user_of_a_rotation_under_way(
    secretsmanager: tuple[helper.SecretFetcher, dict[str, str], dict[str, str]],
) -> None:
    """Prepared (AWSPENDING) before the switch, still there (AWSPREVIOUS) after it: both users log in."""
    fetch, arns, passwords = secretsmanager
    client = boto3.client("secretsmanager", region_name=REGION)
    arn = arns[names.APP_ROLE]
    current = secret_document(names.APP_ROLE, passwords[names.APP_ROLE], f"{names.APP_ROLE}_a")
    client.put_secret_value(SecretId=arn, SecretString=json.dumps(current))
    pending = secret_document(names.APP_ROLE, "the-new-password", f"{names.APP_ROLE}_b")
    version = client.put_secret_value(
        SecretId=arn, SecretString=json.dumps(pending), VersionStages=["AWSPENDING"]
    )["VersionId"]

    def app_lines() -> list[str]:
        text = helper.render(list(arns.items()), fetch)
        return [line for line in text.splitlines() if line.startswith(f'"{names.APP_ROLE}_')]

    verifier = names.SECRET_VERIFIER_KEY
    expected = [
        f'"{names.APP_ROLE}_a" "{current[verifier]}"',
        f'"{names.APP_ROLE}_b" "{pending[verifier]}"',
    ]
    assert app_lines() == expected
    old = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current_id = next(v for v, stages in old.items() if "AWSCURRENT" in stages)
    client.update_secret_version_stage(
        SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=current_id
    )
    assert app_lines() == expected  # switched: _b current, _a previous
    # A version naming another role's user is refused by name, not written.
    wrong = secret_document(names.APP_ROLE, "x", f"{names.READONLY_ROLE}_a")
    client.put_secret_value(SecretId=arn, SecretString=json.dumps(wrong), VersionStages=["AWSPENDING"])
    with pytest.raises(helper.AuthFileError, match="names user 'spike_readonly_a', not spike_app_a or"):
        helper.render(list(arns.items()), fetch)


def test_embedded_helper_runs_end_to_end(tmp_path: Path) -> None:
    """The helper the image installs, run by python with stand-in `aws` and `systemctl` on PATH."""
    program = tmp_path / "spike-pgbouncer-authfile"
    program.write_text(helper_source())
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for role, arn in ARNS.items():
        (secrets_dir / arn.rsplit(":", 1)[1].replace("/", "_")).write_text(
            json.dumps(secret_document(role, f"pw-{role}"))
        )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    # aws secretsmanager get-secret-value --region R --secret-id ARN --query SecretString --output text
    (bin_dir / "aws").write_text(
        "#!/bin/bash\n"
        f'printf "aws %s\\n" "$*" >> {calls}\n'
        f"{AWS_STUB_STAGES}"
        "name=${6##*:}\n"
        f'cat "{secrets_dir}/${{name//\\//_}}"\n'
    )
    (bin_dir / "systemctl").write_text(f'#!/bin/bash\nprintf "systemctl %s\\n" "$*" >> {calls}\n')
    for tool in ("aws", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    auth_file = tmp_path / "run" / "userlist.txt"
    auth_file.parent.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = [sys.executable, str(program), "--region", REGION, "--auth-file", str(auth_file)]
    args += ["--owner", Path.home().owner()]
    for role, arn in ARNS.items():
        args += ["--secret", f"{role}={arn}"]

    first = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert auth_file.read_text().count("SCRAM-SHA-256$") == len(ROLES)
    assert "pw-" not in auth_file.read_text() and "pw-" not in first.stdout + first.stderr
    log = calls.read_text()
    # Each role secret's three staging labels (previous and pending: not found, skipped).
    assert log.count("aws secretsmanager get-secret-value") == 3 * len(ROLES)
    assert "systemctl reload" in log  # the stand-in says the unit is active, and the file is new

    calls.write_text("")
    again = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "is current" in again.stdout
    assert "systemctl" not in calls.read_text()  # unchanged: no reload


def _key_and_certificate(common_name: str) -> tuple[str, str]:
    """A real ECDSA P-256 key and a self-signed certificate for it, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem.decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


def _file_of(arn: str) -> str:
    """Where the stand-in `aws` finds a secret's document (the name part of the ARN, / as _)."""
    return arn.rsplit(":", 1)[1].replace("/", "_")


def test_embedded_helper_writes_the_client_tls_files_0600_and_never_prints_them(tmp_path: Path) -> None:
    program = tmp_path / "helper"
    program.write_text(helper_source())
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for role, arn in ARNS.items():
        (secrets_dir / _file_of(arn)).write_text(json.dumps(secret_document(role, f"pw-{role}")))
    key_pem, cert_pem = _key_and_certificate("first")
    tls_doc = secrets_dir / _file_of(TLS_ARN)
    tls_doc.write_text(json.dumps({helper.TLS_KEY_FIELD: key_pem, helper.TLS_CERT_FIELD: cert_pem}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    (bin_dir / "aws").write_text(
        f'#!/bin/bash\n{AWS_STUB_STAGES}name=${{6##*:}}\ncat "{secrets_dir}/${{name//\\//_}}"\n'
    )
    (bin_dir / "systemctl").write_text(f'#!/bin/bash\nprintf "systemctl %s\\n" "$*" >> {calls}\n')
    for tool in ("aws", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    key_file, cert_file = run_dir / "client-tls.key", run_dir / "client-tls.crt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = [sys.executable, str(program), "--region", REGION, "--auth-file", str(run_dir / "userlist.txt")]
    args += ["--owner", Path.home().owner(), "--tls-secret", TLS_ARN]
    args += ["--tls-key-file", str(key_file), "--tls-cert-file", str(cert_file)]
    for role, arn in ARNS.items():
        args += ["--secret", f"{role}={arn}"]

    first = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert key_file.read_text() == key_pem and cert_file.read_text() == cert_pem
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in first.stdout + first.stderr and "BEGIN" not in first.stdout + first.stderr
    assert "systemctl reload" in calls.read_text()

    calls.write_text("")
    again = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "TLS files current" in again.stdout
    assert "systemctl" not in calls.read_text()

    # A renewed certificate (pulumi up in its last 60 days) is picked up by the timer's next run.
    new_key, new_cert = _key_and_certificate("renewed")
    tls_doc.write_text(json.dumps({helper.TLS_KEY_FIELD: new_key, helper.TLS_CERT_FIELD: new_cert}))
    renewed = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    assert renewed.returncode == 0 and cert_file.read_text() == new_cert and key_file.read_text() == new_key
    assert "systemctl reload" in calls.read_text()


@pytest.mark.parametrize(
    "document",
    [
        {helper.TLS_CERT_FIELD: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        {helper.TLS_KEY_FIELD: "not a key", helper.TLS_CERT_FIELD: "nor a cert"},
        {helper.TLS_KEY_FIELD: "-----BEGIN EC PRIVATE KEY-----\nQUJD\n-----END EC PRIVATE KEY-----\n"},
    ],
)
def test_helper_refuses_a_tls_secret_without_a_pem_key_and_certificate(document: dict[str, str]) -> None:
    with pytest.raises(helper.AuthFileError) as e:
        helper.render_tls(TLS_ARN, lambda _arn, _stage: json.dumps(document))
    assert TLS_ARN in str(e.value)
    assert "BEGIN" not in str(e.value) and "not a key" not in str(e.value)


def test_helper_rejects_a_malformed_secret_argument() -> None:
    with pytest.raises(SystemExit):
        helper.main(["--region", REGION, "--auth-file", "/tmp/x", "--owner", "root", "--secret", "spike_app"])


# ---- a bootstrap that fails says why, on the console and in its own log ------------------------------------


def _run_bootstrap(
    tmp_path: Path, stubs: dict[str, str], extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """Run the rendered script with stand-in commands; returns the run, the console and the boot log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "user-data.sh"
    script.write_text(ud.render_user_data(config()))
    console, boot_log = tmp_path / "console", tmp_path / "bootstrap.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SPIKE_CONSOLE": str(console),
        "SPIKE_BOOT_LOG": str(boot_log),
        **(extra_env or {}),
    }
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False)
    return done, _text(console), _text(boot_log)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


HOOK_STUBS = {
    # IMDSv2: a token, then the instance id; the ASG call is logged (the launch hook's result).
    "curl": 'case "$*" in *api/token*) echo token ;; *instance-id*) echo i-0123456789abcdef0 ;; esac',
    "aws": 'echo "aws $*" >> "$SPIKE_CALLS"',
}


def test_a_host_without_the_images_pgbouncer_abandons_its_launch_and_says_why(tmp_path: Path) -> None:
    """A host that is not on the stack's image (no /usr/local/bin/pgbouncer here) never takes traffic."""
    calls = tmp_path / "calls"
    done, console, boot_log = _run_bootstrap(tmp_path, HOOK_STUBS, {"SPIKE_CALLS": str(calls)})
    assert done.returncode == 1
    reason = f"BOOTSTRAP FAILED: {doc.PGBOUNCER_BIN} is missing: this is not the stack's PgBouncer image"
    assert reason in console and reason in boot_log and "bootstrap complete" not in console
    assert calls.read_text() == (
        "aws autoscaling complete-lifecycle-action --region eu-west-1 --lifecycle-action-result ABANDON "
        "--lifecycle-hook-name spike-pgbouncer-bootstrap --auto-scaling-group-name spike-pgb-dev-hosts "
        "--instance-id i-0123456789abcdef0\n"
    )


def test_the_bootstrap_completes_the_launch_hook_only_after_pgbouncer_runs() -> None:
    script = ud.render_user_data(config())
    started = script.index('systemctl is-active --quiet "pgbouncer@$i.service"')
    assert script.index("complete_launch CONTINUE") > started
    assert "complete_launch ABANDON" in script.split("fail() {", 1)[1].split("\n}\n", 1)[0]
    # Without a hook (no group), nothing is called.
    assert "complete_launch() { :; }" in ud.render_user_data(config(launch_hook=None))
