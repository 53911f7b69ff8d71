"""The PgBouncer hosts' user data: a bash script of configuration and secrets' ARNs, nothing to build.

Pure (no Pulumi, no AWS): `render_user_data(HostConfig) -> str` and `encode_user_data(script) -> str`
(gzip + base64, what the launch template takes; cloud-init unpacks gzip user data itself).

The hosts boot from the stack's PgBouncer image (components/pgbouncer_image.py, its component document
components/pgbouncer_image_document.py): PgBouncer, psql, the service user, /etc/pgbouncer, the auth-file
helper, the pool metrics script and the static units are in it, built and tested once. What the script does
on such a host, as root, once at first boot:
1. checks the image's PgBouncer is the release pgbouncer.ini was rendered for (a mismatched pin fails here,
   before any traffic);
2. copies the RDS CA bundle from the stack's S3 object (for `server_tls_sslmode = verify-full`);
3. writes /etc/pgbouncer/pgbouncer-<peer id>.ini, one per PgBouncer process (not secret: rendered by
   `dbctl.pgbouncer`, embedded verbatim; several processes share port 6543 with so_reuseport and [peers]);
4. (client TLS is the helper's: see 5);
5. runs the image's `hosts/pgbouncer_authfile.py` as a oneshot service that builds the auth file on tmpfs
   (/run/pgbouncer-auth, mode 0600) from the login roles' `scram_verifier` keys in Secrets Manager and,
   with client TLS on, writes the key and certificate that the stack's CA signed for the NLB
   (`components/pgbouncer_tls.py`, from their own secret) beside it, key 0600; it runs before PgBouncer at
   every boot and every few minutes on a timer (rotation, renewal), and reloads every PgBouncer process only
   on a change;
6. starts each process as an instance of the image's template unit, pgbouncer@<peer id>.service, with a
   drop-in sizing LimitNOFILE from max_client_conn (per process); spike-pgbouncer.target wants them all; the
   bootstrap checks that every one runs and answers on its socket, and an instance that keeps failing stops
   the target (spike-pgbouncer-down), so the NLB's health check takes the host out;
7. with `metrics` given, runs the image's `hosts/pool_metrics.py` on a systemd timer every 60 s: SHOW
   POOLS / SHOW STATS as spike_monitor over 127.0.0.1 (several processes: each one's socket, summed),
   published to the stack's CloudWatch namespace; a failure is a journal line, never a stop of PgBouncer;
8. with `launch_hook` given, completes the Auto Scaling group's launch lifecycle hook: CONTINUE once every
   process runs, ABANDON (the ASG terminates the host) with the reason on the console when any step fails,
   so a bad host never takes traffic.

No secret is in the script, and none is printed: there is no `set -x`, secret values never pass through
a shell variable or argument (the helper reads them into its own memory), and logs name roles and ARNs.
"""

from __future__ import annotations

import base64
import gzip
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from components.pgbouncer_image_document import (
    AUTHFILE_UNIT,
    CONFIG_DIR,
    CONFIG_FILE,
    DRAIN_SECONDS,
    HELPER_PATH,
    METRICS_PATH,
    PGBOUNCER_BIN,
    PGBOUNCER_UNIT,
    SERVICE_USER,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL,
    STOP_SIGNAL,
    TIER_DOWN_UNIT,
    TIER_TARGET,
    heredoc_body,
    version_check,
)
from dbctl.core.names import PGBOUNCER_PORT

# Each process's Unix socket directory (systemd's RuntimeDirectory=): its admin console, and where its peers
# forward cancel requests. dbctl.pgbouncer's unix_socket_dir for the hosts.
SOCKET_DIR = "/run/pgbouncer-{peer_id}"
# RDS CA bundle: the ini's server_tls_ca_file.
CA_FILE = f"{CONFIG_DIR}/rds-ca-bundle.pem"
# tmpfs: the verifiers and the TLS key never touch the disk, and a reboot starts from Secrets Manager
# again. Not /run/pgbouncer: the package may own that one (pid file, RuntimeDirectory= emptied on stop).
AUTH_DIR = "/run/pgbouncer-auth"
AUTH_FILE = f"{AUTH_DIR}/userlist.txt"
# Client-facing TLS (the stack CA's certificate for the NLB): the ini's client_tls_cert_file / _key_file.
CLIENT_TLS_CERT_FILE = f"{AUTH_DIR}/client-tls.crt"
CLIENT_TLS_KEY_FILE = f"{AUTH_DIR}/client-tls.key"

AUTH_REFRESH_INTERVAL = "5min"
# The bootstrap's own log (progress and the failure reason; also on the serial console).
BOOT_LOG = "/var/log/spike-pgbouncer-bootstrap.log"
# EC2 refuses user data above 16 KiB (raw, before base64).
USER_DATA_LIMIT = 16 * 1024
# Beyond 2 x max_client_conn (each client can pull a server socket): log, TLS, admin and spare.
NOFILE_MARGIN = 1024

METRICS_UNIT = "spike-pool-metrics"
METRICS_INTERVAL = "60s"
_ARN = re.compile(r"arn:[a-z0-9-]+:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9/_.=+-]+")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
# Where the instance finds its own id (IMDSv2, the only version the launch template allows).
IMDS = "http://169.254.169.254/latest"


@dataclass(frozen=True)
class PoolMetrics:
    """Where the pool metrics go: the stack's namespace, as spike_monitor (its secret), from this port."""

    stack: str
    namespace: str
    monitor_secret_arn: str
    port: int


@dataclass(frozen=True)
class LaunchHook:
    """The Auto Scaling group's launch lifecycle hook that the bootstrap completes (CONTINUE or ABANDON)."""

    group_name: str
    hook_name: str


@dataclass(frozen=True)
class HostConfig:
    """Everything the script needs; all of it may be read by anyone who can read the launch template."""

    region: str
    # dbctl.pgbouncer's output for this version and these paths: one file per process, peer id 1 first
    pgbouncer_inis: tuple[str, ...]
    pgbouncer_version: str  # the version the ini was rendered for: the build must be that release
    role_secret_arns: Mapping[str, str]  # login role -> its Secrets Manager secret ARN
    ca_bundle_s3_uri: str  # s3://bucket/key of the RDS CA bundle
    max_client_conn: int  # per process
    # The secret holding PgBouncer's client TLS key and certificate; None: no client TLS.
    client_tls_secret_arn: str | None = None
    metrics: PoolMetrics | None = None
    launch_hook: LaunchHook | None = None


def nofile_limit(max_client_conn: int) -> int:
    """LimitNOFILE for one PgBouncer process: a client and a server socket per client, plus a margin."""
    return 2 * max_client_conn + NOFILE_MARGIN


def _check(cfg: HostConfig) -> None:
    if not _VERSION.fullmatch(cfg.pgbouncer_version):
        raise ValueError(f"pgbouncer_version {cfg.pgbouncer_version!r} is not a version such as 1.24")
    if not cfg.role_secret_arns:
        raise ValueError("role_secret_arns is empty: PgBouncer needs at least the app role's secret")
    for role, arn in cfg.role_secret_arns.items():
        if not _ROLE.fullmatch(role):
            raise ValueError(f"role {role!r} is not a PostgreSQL role name")
        if not _ARN.fullmatch(arn):
            raise ValueError(f"secret ARN for {role} is not a Secrets Manager secret ARN: {arn!r}")
    if cfg.client_tls_secret_arn is not None and not _ARN.fullmatch(cfg.client_tls_secret_arn):
        raise ValueError(
            f"client_tls_secret_arn is not a Secrets Manager secret ARN: {cfg.client_tls_secret_arn!r}"
        )
    if not _S3_URI.fullmatch(cfg.ca_bundle_s3_uri):
        raise ValueError(f"ca_bundle_s3_uri {cfg.ca_bundle_s3_uri!r} is not an s3://bucket/key URI")
    hook = cfg.launch_hook
    if hook is not None and not (_NAME.fullmatch(hook.group_name) and _NAME.fullmatch(hook.hook_name)):
        raise ValueError(f"launch hook names {hook.group_name!r}, {hook.hook_name!r} are not ASG names")
    if not cfg.pgbouncer_inis:
        raise ValueError("pgbouncer_inis is empty: render one pgbouncer.ini per process")
    if cfg.max_client_conn < 1:
        raise ValueError(f"max_client_conn must be >= 1, got {cfg.max_client_conn}")
    if cfg.metrics is not None:
        m = cfg.metrics
        if not _ARN.fullmatch(m.monitor_secret_arn):
            raise ValueError(f"monitor secret ARN is not a Secrets Manager ARN: {m.monitor_secret_arn!r}")
        if not re.fullmatch(r"[A-Za-z0-9/_.#:-]{1,255}", m.namespace):
            raise ValueError(f"metrics namespace {m.namespace!r} is not a CloudWatch namespace")


def _heredoc(path: str, body: str, tag: str) -> str:
    """`cat > path` with body verbatim (quoted heredoc: no expansion)."""
    return f"cat > {shlex.quote(path)} <<'{tag}'\n{heredoc_body(body, tag, path)}{tag}\n"


def _image_section() -> str:
    return f"""# 1. PgBouncer as the stack's image (components/pgbouncer_image.py) built and tested it.
[ -x {PGBOUNCER_BIN} ] || fail "{PGBOUNCER_BIN} is missing: this is not the stack's PgBouncer image"
{version_check(PGBOUNCER_BIN)}log "pgbouncer $built from the image"
svc_user={SERVICE_USER}
"""


def _hook_functions(hook: LaunchHook | None) -> str:
    """complete_launch RESULT: tell the group's launch hook CONTINUE or ABANDON (a no-op without a hook)."""
    if hook is None:
        return "complete_launch() { :; }\n"
    return f"""complete_launch() {{
  local token instance_id
  token=$(curl -sS -X PUT {IMDS}/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
  instance_id=$(curl -sS -H "X-aws-ec2-metadata-token: $token" {IMDS}/meta-data/instance-id) || return 1
  aws autoscaling complete-lifecycle-action --region "$REGION" --lifecycle-action-result "$1" \\
    --lifecycle-hook-name {hook.hook_name} --auto-scaling-group-name {hook.group_name} \\
    --instance-id "$instance_id"
}}
"""


def socket_dirs(processes: int) -> list[str]:
    """The processes' Unix socket directories; none for one process (its config has no socket: TCP only)."""
    return [SOCKET_DIR.format(peer_id=i) for i in range(1, processes + 1)] if processes > 1 else []


def _metrics_section(m: PoolMetrics | None, processes: int) -> str:
    if m is None:
        return ""
    q = shlex.quote
    args = f"--stack {q(m.stack)} --region $REGION --namespace {q(m.namespace)}"
    args += f" --monitor-secret {q(m.monitor_secret_arn)} --port {m.port}"
    # Several processes: each one's admin console over its own socket, summed (TCP reaches only one of them).
    args += "".join(f" --socket-dir {d}" for d in socket_dirs(processes))
    return f"""
# 7. Pool metrics to CloudWatch every {METRICS_INTERVAL} (the image's hosts/pool_metrics.py): psql as
#    spike_monitor on 127.0.0.1; a failure is a journal line (journalctl -u {METRICS_UNIT}).
cat > /etc/systemd/system/{METRICS_UNIT}.service <<EOF
[Unit]
Description=PgBouncer pool metrics to CloudWatch ({m.namespace})
After={TIER_TARGET}

[Service]
Type=oneshot
DynamicUser=yes
PrivateTmp=yes
Environment=HOME=/tmp
ExecStart=/usr/bin/python3 {METRICS_PATH} {args}
EOF
cat > /etc/systemd/system/{METRICS_UNIT}.timer <<'EOF'
[Unit]
Description=Publish PgBouncer pool metrics every {METRICS_INTERVAL}

[Timer]
OnBootSec={METRICS_INTERVAL}
OnUnitActiveSec={METRICS_INTERVAL}
AccuracySec=1s

[Install]
WantedBy=timers.target
EOF
systemctl daemon-reload
systemctl enable --now {METRICS_UNIT}.timer
"""


def _ini_files(inis: tuple[str, ...]) -> str:
    out = []
    for i, ini in enumerate(inis, 1):
        path = CONFIG_FILE.replace("%i", str(i))
        out.append(
            f"{_heredoc(path + '.tmp', ini, f'SPIKE_PGBOUNCER_INI_{i}')}"
            f'chown "root:$svc_user" {path}.tmp\nchmod 0640 {path}.tmp\nmv -f {path}.tmp {path}\n'
        )
    return "".join(out)


def _service_section(cfg: HostConfig, processes: int) -> str:
    """6. systemd: one instance of a template unit per process (instance = peer id), a target over them, the
    bootstrap's check of every one, and what takes the host out of the NLB when one stays down."""
    unit, target, down = PGBOUNCER_UNIT, TIER_TARGET, TIER_DOWN_UNIT
    instances = " ".join(f"{unit}{i}.service" for i in range(1, processes + 1))
    sock = f"/run/pgbouncer-$i/.s.PGSQL.{PGBOUNCER_PORT}"
    n, port = processes, PGBOUNCER_PORT
    # One process has no Unix socket (TCP only, unix_socket_dir = ''): nothing to wait for there.
    socket_note, socket_check = "", ""
    if socket_dirs(processes):
        socket_note = " and has its own socket (TCP would reach any one of them)"
        socket_check = (
            f'  for _ in $(seq 1 50); do [ -S "{sock}" ] && break; sleep 0.2; done\n'
            f'  [ -S "{sock}" ] ||\n'
            f'    fail "pgbouncer process $i has no socket {sock} (journalctl -u {unit}$i)"\n'
        )
    return f"""# 6. PgBouncer: {n} single-threaded process(es) on port {port} (so_reuseport; [peers] forward
#    cancel requests), the instances {unit}<peer id> of the image's template unit, each on its
#    own config, after the auth file, with enough file descriptors, restarted if it dies; Type=notify
#    (built --with-systemd): started means listening. The NLB's TCP check reaches whichever process
#    the kernel picks, so it cannot see one process down: systemd restarts a dead one, and one that
#    fails {START_LIMIT_BURST} times in {START_LIMIT_INTERVAL} stops every process here ({down}): the
#    check fails, the ASG replaces the host.
# The template unit is the image's (KillSignal={STOP_SIGNAL}, TimeoutStopSec={DRAIN_SECONDS}s); this
# host's file descriptor limit follows max_client_conn.
install -d -m 0755 /etc/systemd/system/{unit}.service.d
cat > /etc/systemd/system/{unit}.service.d/limits.conf <<'EOF'
[Service]
LimitNOFILE={nofile_limit(cfg.max_client_conn)}
EOF
cat > /etc/systemd/system/{target} <<'EOF'
[Unit]
Description=Every PgBouncer process on this host
Wants={instances}

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl start {AUTHFILE_UNIT}.service
systemctl enable --now {AUTHFILE_UNIT}.timer
systemctl enable {target}
systemctl restart {target}
# Up: every process runs (Type=notify: it said it listens){socket_note}.
for i in $(seq 1 {processes}); do
  systemctl is-active --quiet "{unit}$i.service" ||
    fail "pgbouncer process $i is not running (journalctl -u {unit}$i)"
{socket_check}done
log "pgbouncer is active: {processes} process(es) on port {PGBOUNCER_PORT}"
"""


def render_user_data(cfg: HostConfig) -> str:
    """The bash user data for one PgBouncer host (deterministic: same input, same bytes)."""
    _check(cfg)
    q = shlex.quote
    secret_args = " ".join(f"--secret {role}={arn}" for role, arn in cfg.role_secret_arns.items())
    roles = ", ".join(cfg.role_secret_arns)
    processes = len(cfg.pgbouncer_inis)
    instances = [f"{PGBOUNCER_UNIT}{i}.service" for i in range(1, processes + 1)]
    exec_start = f"/usr/bin/python3 {HELPER_PATH} --region $REGION --auth-file {AUTH_FILE}"
    exec_start += f" --owner $svc_user {secret_args}"
    # A changed auth file or TLS key reaches every process: each reloads (SIGHUP) on its own.
    exec_start += "".join(f" --reload-unit {unit}" for unit in instances)
    files = "auth file"
    if cfg.client_tls_secret_arn is not None:
        exec_start += f" --tls-secret {cfg.client_tls_secret_arn}"
        exec_start += f" --tls-key-file {CLIENT_TLS_KEY_FILE} --tls-cert-file {CLIENT_TLS_CERT_FILE}"
        files = "auth file and client TLS key"
    return f"""#!/bin/bash
# spike-land-db PgBouncer host bootstrap (Amazon Linux 2023 arm64). Rendered by
# components/pgbouncer_userdata.py from the stack settings: change the renderer, not this script.
# It holds no secret: the auth file is built on the host from Secrets Manager (SCRAM verifiers only).
set -euo pipefail
set +x # never trace: nothing may echo into the console or /var/log/cloud-init-output.log
umask 022

readonly REGION={q(cfg.region)}
readonly PGBOUNCER_VERSION={q(cfg.pgbouncer_version)}
readonly CA_BUNDLE_URI={q(cfg.ca_bundle_s3_uri)}

# Progress and, above all, the reason a bootstrap failed land where an operator finds them without logging
# in: the serial console (`aws ec2 get-console-output --latest --instance-id ...`) and {BOOT_LOG}
# (besides cloud-init's own log). Nothing secret passes through this script, so no secret can land there.
BOOT_LOG=${{SPIKE_BOOT_LOG:-{BOOT_LOG}}}
CONSOLE=${{SPIKE_CONSOLE:-/dev/console}}
log() {{
  printf 'spike-pgbouncer: %s\\n' "$*"
  printf '%s spike-pgbouncer: %s\\n' "$(date -u +%FT%TZ)" "$*" >> "$BOOT_LOG" 2>/dev/null || true
}}
{_hook_functions(cfg.launch_hook)}fail() {{
  trap - ERR
  log "BOOTSTRAP FAILED: $*"
  printf 'spike-pgbouncer: BOOTSTRAP FAILED: %s (details: %s)\\n' "$*" "$BOOT_LOG" \\
    >> "$CONSOLE" 2>/dev/null || true
  # The launch hook: ABANDON, so the group terminates this host before it ever takes traffic.
  complete_launch ABANDON || log "could not abandon the launch lifecycle action"
  exit 1
}}
trap 'fail "exit status $? at line $LINENO: $BASH_COMMAND"' ERR

{_image_section()}
# 2. The RDS CA bundle, for server_tls_sslmode = verify-full (through the S3 gateway endpoint).
aws s3 cp --only-show-errors --region "$REGION" "$CA_BUNDLE_URI" {CA_FILE}.tmp
grep -q -- '-----BEGIN CERTIFICATE-----' {CA_FILE}.tmp
chmod 0644 {CA_FILE}.tmp
mv -f {CA_FILE}.tmp {CA_FILE}

# 3. pgbouncer-<peer id>.ini per process, as rendered by dbctl.pgbouncer (no secrets in them).
{_ini_files(cfg.pgbouncer_inis)}
# 4. Client TLS, if on, is the helper's (5): the stack CA's certificate for the NLB, key 0600 on tmpfs.

# 5. The auth file: built on tmpfs from Secrets Manager by the image's helper, at boot and on a timer.
printf 'd {AUTH_DIR} 0750 %s %s -\\n' "$svc_user" "$svc_user" > /etc/tmpfiles.d/spike-pgbouncer.conf
systemd-tmpfiles --create /etc/tmpfiles.d/spike-pgbouncer.conf
cat > /etc/systemd/system/{AUTHFILE_UNIT}.service <<EOF
[Unit]
Description=PgBouncer {files} from Secrets Manager ({roles}: SCRAM verifiers only)
Wants=network-online.target
After=network-online.target
Before={TIER_TARGET}

[Service]
Type=oneshot
ExecStart={exec_start}
EOF
cat > /etc/systemd/system/{AUTHFILE_UNIT}.timer <<'EOF'
[Unit]
Description=Refresh the PgBouncer auth file when a role secret rotates

[Timer]
OnBootSec={AUTH_REFRESH_INTERVAL}
OnUnitActiveSec={AUTH_REFRESH_INTERVAL}
RandomizedDelaySec=30s

[Install]
WantedBy=timers.target
EOF

{_service_section(cfg, processes)}{_metrics_section(cfg.metrics, processes)}
# 8. Ready: the launch hook may let the group put this host in service (and behind the NLB).
complete_launch CONTINUE || fail "could not complete the launch lifecycle action"
printf 'spike-pgbouncer: bootstrap complete\\n' >> "$CONSOLE" 2>/dev/null || true
"""


def encode_user_data(script: str) -> str:
    """gzip (fixed mtime: same script, same bytes) + base64, within EC2's 16 KiB user data limit."""
    packed = gzip.compress(script.encode("utf-8"), compresslevel=9, mtime=0)
    if len(packed) > USER_DATA_LIMIT:
        raise ValueError(
            f"user data is {len(packed)} bytes gzipped, over EC2's {USER_DATA_LIMIT}; "
            "shorten pgbouncer.ini's comments or move content to S3"
        )
    return base64.b64encode(packed).decode("ascii")
