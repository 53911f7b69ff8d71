"""The PgBouncer hosts' user data: a bash script rendered from settings and the shared renderer's output.

Pure (no Pulumi, no AWS): `render_user_data(HostConfig) -> str` and `encode_user_data(script) -> str`
(gzip + base64, what the launch template takes; cloud-init unpacks gzip user data itself).

What the script does on an Amazon Linux 2023 arm64 host, as root, once at first boot:
1. builds PgBouncer from its pinned source (`components/pgbouncer_source.py`: Debian's source package,
   which `pulumi up` copies into the stack's private bucket): fetches it through the VPC's S3 gateway
   endpoint, checks its sha256, applies Debian's patches, builds it with compilers and headers from the
   Amazon Linux 2023 core repository (removed again afterwards) into /usr/local, refuses a build that is not
   the version pgbouncer.ini was rendered for, and adds what a package would: the `pgbouncer` system user
   and /etc/pgbouncer (section 6 writes the systemd units);
2. copies the RDS CA bundle from the stack's S3 object (for `server_tls_sslmode = verify-full`);
3. writes /etc/pgbouncer/pgbouncer-<peer id>.ini, one per PgBouncer process (not secret: rendered by
   `dbctl.pgbouncer`, embedded verbatim; several processes share port 6543 with so_reuseport and [peers]);
4. (client TLS is the helper's: see 5);
5. installs `hosts/pgbouncer_authfile.py` as a oneshot service that builds the auth file on tmpfs
   (/run/pgbouncer-auth, mode 0600) from the login roles' `scram_verifier` keys in Secrets Manager and,
   with client TLS on, writes the key and certificate that the stack's CA signed for the NLB
   (`components/pgbouncer_tls.py`, from their own secret) beside it, key 0600; it runs before PgBouncer at
   every boot and every few minutes on a timer (rotation, renewal), and reloads every PgBouncer process only
   on a change;
6. runs each process as an instance of a template unit, pgbouncer@<peer id>.service (the package's unit
   off): in the foreground on its own file, its socket dir /run/pgbouncer-<peer id>, LimitNOFILE sized from
   max_client_conn (per process), Restart=on-failure, after the auth file; spike-pgbouncer.target wants them
   all; the bootstrap checks that every one runs and answers on its socket, and an instance that keeps
   failing stops the target (spike-pgbouncer-down), so the NLB's health check takes the host out;
7. with `metrics` given, installs psql and `hosts/pool_metrics.py`, run by a systemd timer every 60 s: SHOW
   POOLS / SHOW STATS as spike_monitor over 127.0.0.1 (several processes: each one's socket, summed),
   published to the stack's CloudWatch namespace; a failure is a journal line, never a stop of PgBouncer.

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
from pathlib import Path

from components.pgbouncer_source import PINS_FILE, PinnedSource, is_release_of
from dbctl.core.names import PGBOUNCER_PORT

# PgBouncer's install (section 1): built from the pinned source into this prefix, run as this user.
PREFIX = "/usr/local"
PGBOUNCER_BIN = f"{PREFIX}/bin/pgbouncer"
SERVICE_USER = "pgbouncer"
# Amazon Linux 2023 core packages (docs/pgbouncer.md cites the package list): the libraries PgBouncer links
# (installed on their own, so they stay), then what only the build needs (removed after it).
RUNTIME_PACKAGES = ("libevent", "c-ares", "openssl-libs", "systemd-libs")
BUILD_PACKAGES = (
    "gcc",
    "make",
    "patch",
    "tar",
    "gzip",
    "xz",
    "pkgconf-pkg-config",
    "libevent-devel",
    "openssl-devel",
    "c-ares-devel",
    "systemd-devel",
)
# Debian's configure flags (debian/rules) less PAM (auth_type is scram-sha-256 from the auth file).
CONFIGURE_FLAGS = ("--with-systemd", "--with-cares=yes", "--with-openssl")
# The compiler's output (the bootstrap's own log says when it starts and where this is).
BUILD_LOG = "/var/log/spike-pgbouncer-build.log"

CONFIG_DIR = "/etc/pgbouncer"
# One PgBouncer process per vCPU, all on 6543 (so_reuseport): systemd instances pgbouncer@<peer id>, each on
# its own rendered file; "%i" is systemd's instance name in the template unit.
CONFIG_FILE = f"{CONFIG_DIR}/pgbouncer-%i.ini"
PGBOUNCER_UNIT = "pgbouncer@"
# Starts, stops and restarts every instance (PartOf=); the bootstrap and the operator use it.
TIER_TARGET = "spike-pgbouncer.target"
# Stops the tier when an instance keeps failing, so the NLB's health check takes the host out (below).
TIER_DOWN_UNIT = "spike-pgbouncer-down"
# Each process's Unix socket directory (systemd's RuntimeDirectory=): its admin console, and where its peers
# forward cancel requests. dbctl.pgbouncer's unix_socket_dir for the hosts.
SOCKET_DIR = "/run/pgbouncer-{peer_id}"
# Stopping PgBouncer (systemd stop/restart, the instance's shutdown): SIGINT, PgBouncer's "safe shutdown"
# (it waits for every transaction in flight, then closes the clients), not systemd's default SIGTERM, which
# since 1.23 waits for every *client* to disconnect: long-lived app pools never do, so a stop would hang
# until systemd's SIGKILL cut the transactions it was meant to protect (tests/integration/hosts/
# test_pgbouncer_stop_signal.py shows both on the real binary). A stop lasts at most DRAIN_SECONDS, the
# NLB target group's deregistration delay: the same time a client is given to finish when its host leaves.
STOP_SIGNAL = "SIGINT"
DRAIN_SECONDS = 30
# An instance that fails this often within this long stays failed (and stops the tier).
START_LIMIT_BURST = 5
START_LIMIT_INTERVAL = "60s"
# RDS CA bundle: the ini's server_tls_ca_file.
CA_FILE = f"{CONFIG_DIR}/rds-ca-bundle.pem"
# tmpfs: the verifiers and the TLS key never touch the disk, and a reboot starts from Secrets Manager
# again. Not /run/pgbouncer: the package may own that one (pid file, RuntimeDirectory= emptied on stop).
AUTH_DIR = "/run/pgbouncer-auth"
AUTH_FILE = f"{AUTH_DIR}/userlist.txt"
# Client-facing TLS (the stack CA's certificate for the NLB): the ini's client_tls_cert_file / _key_file.
CLIENT_TLS_CERT_FILE = f"{AUTH_DIR}/client-tls.crt"
CLIENT_TLS_KEY_FILE = f"{AUTH_DIR}/client-tls.key"

HELPER_PATH = "/usr/local/sbin/spike-pgbouncer-authfile"
AUTHFILE_UNIT = "spike-pgbouncer-authfile"
AUTH_REFRESH_INTERVAL = "5min"
# The bootstrap's own log (progress and the failure reason; also on the serial console).
BOOT_LOG = "/var/log/spike-pgbouncer-bootstrap.log"
# EC2 refuses user data above 16 KiB (raw, before base64).
USER_DATA_LIMIT = 16 * 1024
# Beyond 2 x max_client_conn (each client can pull a server socket): log, TLS, admin and spare.
NOFILE_MARGIN = 1024

_HOSTS_DIR = Path(__file__).resolve().parent.parent / "hosts"
_HELPER_SOURCE = _HOSTS_DIR / "pgbouncer_authfile.py"
_METRICS_SOURCE = _HOSTS_DIR / "pool_metrics.py"
METRICS_PATH = "/usr/local/sbin/spike-pool-metrics"
METRICS_UNIT = "spike-pool-metrics"
METRICS_INTERVAL = "60s"
# PostgreSQL's client (psql) from Amazon Linux 2023's own repository, for PgBouncer's admin console.
PSQL_PACKAGE = "postgresql15"
_ARN = re.compile(r"arn:[a-z0-9-]+:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+")
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9/_.=+-]+")
_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PoolMetrics:
    """Where the pool metrics go: the stack's namespace, as spike_monitor (its secret), from this port."""

    stack: str
    namespace: str
    monitor_secret_arn: str
    port: int


@dataclass(frozen=True)
class HostConfig:
    """Everything the script needs; all of it may be read by anyone who can read the launch template."""

    region: str
    # dbctl.pgbouncer's output for this version and these paths: one file per process, peer id 1 first
    pgbouncer_inis: tuple[str, ...]
    pgbouncer_version: str  # the version the ini was rendered for: the build must be that release
    role_secret_arns: Mapping[str, str]  # login role -> its Secrets Manager secret ARN
    ca_bundle_s3_uri: str  # s3://bucket/key of the RDS CA bundle
    source: PinnedSource  # PgBouncer's pinned source files ...
    source_s3_prefix: str  # ... under s3://bucket/prefix/ in the stack's bucket
    max_client_conn: int  # per process
    # The secret holding PgBouncer's client TLS key and certificate; None: no client TLS.
    client_tls_secret_arn: str | None = None
    metrics: PoolMetrics | None = None


def nofile_limit(max_client_conn: int) -> int:
    """LimitNOFILE for one PgBouncer process: a client and a server socket per client, plus a margin."""
    return 2 * max_client_conn + NOFILE_MARGIN


def helper_source() -> str:
    """The auth-file helper exactly as the host runs it."""
    return _HELPER_SOURCE.read_text(encoding="utf-8")


def _check(cfg: HostConfig) -> None:
    if not _VERSION.fullmatch(cfg.pgbouncer_version):
        raise ValueError(f"pgbouncer_version {cfg.pgbouncer_version!r} is not a version such as 1.24")
    if not is_release_of(cfg.source.version, cfg.pgbouncer_version):
        raise ValueError(
            f"the pinned PgBouncer source is {cfg.source.version}, not pgbouncer_version "
            f"{cfg.pgbouncer_version}"
        )
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
    if not cfg.source_s3_prefix.endswith("/") or not _S3_URI.fullmatch(cfg.source_s3_prefix + "x"):
        raise ValueError(f"source_s3_prefix {cfg.source_s3_prefix!r} is not an s3://bucket/prefix/ URI")
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


def _heredoc_body(body: str, tag: str, what: str) -> str:
    """body for a quoted heredoc ending in tag; refused if a line of it is the delimiter."""
    if any(line == tag for line in body.splitlines()):
        raise ValueError(f"the content for {what} contains the heredoc delimiter line {tag}")
    return body if body.endswith("\n") else body + "\n"


def _heredoc(path: str, body: str, tag: str) -> str:
    """`cat > path` with body verbatim (quoted heredoc: no expansion)."""
    return f"cat > {shlex.quote(path)} <<'{tag}'\n{_heredoc_body(body, tag, path)}{tag}\n"


def build_steps(source: PinnedSource, prefix: str) -> str:
    """Section 1's build as the host runs it: fetch, check, patch, configure, make, install under prefix.

    Expects REGION, PGBOUNCER_SOURCE_URI, BUILD_LOG, build_dir (an empty directory) and fail() to be set.
    """
    q = shlex.quote
    names = " ".join(q(f.name) for f in source.files)
    sums = _heredoc_body(source.sha256sum_lines(), "SPIKE_PGBOUNCER_SHA256", "the source's checksums")
    return f"""for name in {names}; do
  aws s3 cp --only-show-errors --region "$REGION" "$PGBOUNCER_SOURCE_URI$name" "$build_dir/$name"
done
if ! (cd "$build_dir" && sha256sum -c --strict --quiet) <<'SPIKE_PGBOUNCER_SHA256'
{sums}SPIKE_PGBOUNCER_SHA256
then
  fail "the PgBouncer source in $PGBOUNCER_SOURCE_URI does not match its pinned sha256 ({PINS_FILE.name})"
fi
tar -xzf "$build_dir"/{q(source.orig.name)} -C "$build_dir"
cd "$build_dir"/{q("pgbouncer-" + source.version)}
tar -xJf "$build_dir"/{q(source.debian.name)}
{{
  # Debian's patches in its series order (its backported security fixes among them).
  while read -r patch_name patch_opts; do
    case $patch_name in '' | '#'*) continue ;; esac
    patch "${{patch_opts:--p1}}" --forward < "debian/patches/$patch_name"
  done < debian/patches/series
  ./configure --prefix={q(prefix)} {" ".join(CONFIGURE_FLAGS)}
  make -j"$(nproc)"
  make install
}} >> "$BUILD_LOG" 2>&1
cd /
"""


def version_check(binary: str) -> str:
    """Refuse a PgBouncer that is not the release pgbouncer.ini was rendered for ($PGBOUNCER_VERSION)."""
    return f"""built=$({shlex.quote(binary)} --version | awk 'NR == 1 {{ print $2 }}')
case $built in
  "$PGBOUNCER_VERSION" | "$PGBOUNCER_VERSION".*) ;;
  *) fail "pgbouncer $built was built, but pgbouncer.ini was rendered for $PGBOUNCER_VERSION" ;;
esac
"""


def _install_section(source: PinnedSource) -> str:
    return f"""# 1. PgBouncer, built from its pinned source (components/pgbouncer_source.py: Debian's source
#    package {source.debian_version}), which `pulumi up` put in the stack's bucket; compilers and
#    headers come from the AL2023 core repository and go again after the build. Refuse another release.
log "building pgbouncer {source.version} from the stack's pinned source (compiler output: $BUILD_LOG)"
dnf install -y -q {" ".join(RUNTIME_PACKAGES)}
build_only=()
for pkg in {" ".join(BUILD_PACKAGES)}; do
  rpm -q --quiet "$pkg" || build_only+=("$pkg")
done
if [ ${{#build_only[@]}} -gt 0 ]; then dnf install -y -q "${{build_only[@]}}"; fi
build_dir=$(mktemp -d -t spike-pgbouncer-build.XXXXXX)
{build_steps(source, PREFIX)}rm -rf "$build_dir"
if [ ${{#build_only[@]}} -gt 0 ]; then dnf remove -y -q "${{build_only[@]}}"; fi
{version_check(PGBOUNCER_BIN)}log "pgbouncer $built installed as {PGBOUNCER_BIN}"
# What a package would add: a system user and the config directory (section 6 writes the units).
if ! id -u {SERVICE_USER} > /dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /sbin/nologin {SERVICE_USER}
fi
svc_user={SERVICE_USER}
install -d -m 0755 {CONFIG_DIR}
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
    script = _heredoc(METRICS_PATH, _METRICS_SOURCE.read_text(encoding="utf-8"), "SPIKE_POOL_METRICS")
    return f"""
# 7. Pool metrics to CloudWatch every {METRICS_INTERVAL} (hosts/pool_metrics.py): psql as spike_monitor on
#    127.0.0.1; a failure is a journal line (journalctl -u {METRICS_UNIT}); PgBouncer is never touched.
dnf install -y -q {PSQL_PACKAGE}
{script}chmod 0755 {METRICS_PATH}
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
#    cancel requests), the instances {unit}<peer id> of one template unit, each on its own
#    config, after the auth file, with enough file descriptors, restarted if it dies; Type=notify
#    (built --with-systemd): started means listening. The NLB's TCP check reaches whichever process
#    the kernel picks, so it cannot see one process down: systemd restarts a dead one, and one that
#    fails {START_LIMIT_BURST} times in {START_LIMIT_INTERVAL} stops every process here ({down}): the
#    check fails, the ASG replaces the host.
pgbouncer_bin={PGBOUNCER_BIN}
cat > /etc/systemd/system/{unit}.service <<EOF
[Unit]
Description=PgBouncer process %i of {processes} on port {PGBOUNCER_PORT}
Requires={AUTHFILE_UNIT}.service
After={AUTHFILE_UNIT}.service network-online.target
PartOf={target}
OnFailure={down}.service
StartLimitIntervalSec={START_LIMIT_INTERVAL}
StartLimitBurst={START_LIMIT_BURST}

[Service]
Type=notify
User=$svc_user
RuntimeDirectory=pgbouncer-%i
RuntimeDirectoryMode=0755
ExecStart=$pgbouncer_bin {CONFIG_FILE}
ExecReload=/bin/kill -HUP \\$MAINPID
KillSignal={STOP_SIGNAL}
TimeoutStopSec={DRAIN_SECONDS}s
LimitNOFILE={nofile_limit(cfg.max_client_conn)}
Restart=on-failure
RestartSec=2s
EOF
cat > /etc/systemd/system/{target} <<'EOF'
[Unit]
Description=Every PgBouncer process on this host
Wants={instances}

[Install]
WantedBy=multi-user.target
EOF
cat > /etc/systemd/system/{down}.service <<'EOF'
[Unit]
Description=Stop every PgBouncer process: one keeps failing, so the NLB takes this host out

[Service]
Type=oneshot
ExecStart=/usr/bin/systemctl stop {target}
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
readonly PGBOUNCER_SOURCE_URI={q(cfg.source_s3_prefix)}
readonly CA_BUNDLE_URI={q(cfg.ca_bundle_s3_uri)}

# Progress and, above all, the reason a bootstrap failed land where an operator finds them without logging
# in: the serial console (`aws ec2 get-console-output --latest --instance-id ...`) and {BOOT_LOG}
# (besides cloud-init's own log). Nothing secret passes through this script, so no secret can land there.
BOOT_LOG=${{SPIKE_BOOT_LOG:-{BOOT_LOG}}}
CONSOLE=${{SPIKE_CONSOLE:-/dev/console}}
BUILD_LOG=${{SPIKE_BUILD_LOG:-{BUILD_LOG}}}
log() {{
  printf 'spike-pgbouncer: %s\\n' "$*"
  printf '%s spike-pgbouncer: %s\\n' "$(date -u +%FT%TZ)" "$*" >> "$BOOT_LOG" 2>/dev/null || true
}}
fail() {{
  log "BOOTSTRAP FAILED: $*"
  printf 'spike-pgbouncer: BOOTSTRAP FAILED: %s (details: %s)\\n' "$*" "$BOOT_LOG" \\
    >> "$CONSOLE" 2>/dev/null || true
  exit 1
}}
trap 'fail "exit status $? at line $LINENO: $BASH_COMMAND"' ERR

{_install_section(cfg.source)}
# 2. The RDS CA bundle, for server_tls_sslmode = verify-full (through the S3 gateway endpoint).
aws s3 cp --only-show-errors --region "$REGION" "$CA_BUNDLE_URI" {CA_FILE}.tmp
grep -q -- '-----BEGIN CERTIFICATE-----' {CA_FILE}.tmp
chmod 0644 {CA_FILE}.tmp
mv -f {CA_FILE}.tmp {CA_FILE}

# 3. pgbouncer-<peer id>.ini per process, as rendered by dbctl.pgbouncer (no secrets in them).
{_ini_files(cfg.pgbouncer_inis)}
# 4. Client TLS, if on, is the helper's (5): the stack CA's certificate for the NLB, key 0600 on tmpfs.

# 5. The auth file: built on tmpfs from Secrets Manager by the helper, at boot and on a timer (rotation).
{_heredoc(HELPER_PATH, helper_source(), "SPIKE_AUTHFILE_HELPER")}chmod 0755 {HELPER_PATH}
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
