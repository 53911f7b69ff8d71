"""The PgBouncer image's EC2 Image Builder component document: what is built into the hosts' AMI, and how the
image is tested before it is accepted. Pure (no Pulumi, no AWS): `component_document(source, version)`.

Image Builder runs the document with AWSTOE: the `build` phase on the build instance (launched from the
Amazon Linux 2023 arm64 parent image), then, on a new test instance launched from the resulting AMI, the
`test` phase; a failed step fails the image, so a broken build never reaches a host (docs/pgbouncer.md).
Every step is `ExecuteBash`; each runs as its own bash script (state between steps lives in WORK), so each
starts with the same prelude. Paths honour `SPIKE_ROOT` (unset on AWS: `/`) and the service user
`SPIKE_SERVICE_USER`, so tests/integration/hosts/test_pgbouncer_build.py runs every step here, in a temp
root, with only the Amazon Linux commands stubbed.

build: install the runtime libraries, psql and the build tools (AL2023's core repository, through the S3
gateway endpoint); fetch PgBouncer's pinned source ({{ SourceUri }}, the stack's bucket) and check its
sha256; apply Debian's patch series, configure, make, install; refuse a release other than the pinned one;
remove the build-only tools; install the service user, /etc/pgbouncer, the auth-file helper, the pool
metrics script and the static systemd units (the template unit pgbouncer@.service and the unit that takes a
failing host out of the NLB). What depends on the stack (pgbouncer.ini, the secrets' ARNs, the number of
processes, LimitNOFILE) stays in the user data (components/pgbouncer_userdata.py).

test: the binary is the pinned release built with systemd, c-ares and OpenSSL; a `Type=notify` start works
(systemd-run returns once PgBouncer said READY=1); and a client logs in with SCRAM through it to a local
PostgreSQL (AL2023's postgresql15-server, installed on the throwaway test instance only).
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any

import yaml

from components.pgbouncer_source import PINS_FILE, PinnedSource
from dbctl.core.names import PGBOUNCER_PORT

PREFIX = "/usr/local"
PGBOUNCER_BIN = f"{PREFIX}/bin/pgbouncer"
SERVICE_USER = "pgbouncer"
CONFIG_DIR = "/etc/pgbouncer"
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
# PostgreSQL's client (psql) from AL2023's own repository: PgBouncer's admin console for pool metrics.
PSQL_PACKAGE = "postgresql15"
# Only on the test instance: the local PostgreSQL the SCRAM login goes to.
TEST_SERVER_PACKAGE = "postgresql15-server"
# Debian's configure flags (debian/rules) less PAM (auth_type is scram-sha-256 from the auth file).
CONFIGURE_FLAGS = ("--with-systemd", "--with-cares=yes", "--with-openssl")

# The host scripts and units the image carries (the user data configures and starts them).
HELPER_PATH = "/usr/local/sbin/spike-pgbouncer-authfile"
METRICS_PATH = "/usr/local/sbin/spike-pool-metrics"
PGBOUNCER_UNIT = "pgbouncer@"
CONFIG_FILE = f"{CONFIG_DIR}/pgbouncer-%i.ini"
TIER_TARGET = "spike-pgbouncer.target"
TIER_DOWN_UNIT = "spike-pgbouncer-down"
AUTHFILE_UNIT = "spike-pgbouncer-authfile"
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

# The component's parameters (the recipe passes them; AWSTOE substitutes {{ Name }}).
PARAM_SOURCE_URI = "SourceUri"
PARAM_REGION = "Region"
# The transient unit and the role the test phase uses (nothing of them stays: the test instance is discarded).
TEST_UNIT = "spike-pgbouncer-image-test"
TEST_ROLE = "spike_image_test"

HOSTS_DIR = Path(__file__).resolve().parent.parent / "hosts"
# The host scripts the image installs (file in hosts/ -> path on the host). They reach the build instance as
# objects beside the source (Image Builder refuses inline component data over COMPONENT_DATA_LIMIT).
HOST_SCRIPTS = {"pgbouncer_authfile.py": HELPER_PATH, "pool_metrics.py": METRICS_PATH}
# CreateComponent's `data`: at most 16,000 characters (EC2 Image Builder API Reference, CreateComponent).
COMPONENT_DATA_LIMIT = 16_000

# Every step starts with this: strict bash, the root and work directories, the service user, fail().
PRELUDE = """set -euo pipefail
ROOT=${SPIKE_ROOT:-}
WORK=${SPIKE_IMAGE_WORK:-/var/tmp/spike-pgbouncer-image}
SVC_USER=${SPIKE_SERVICE_USER:-@SERVICE_USER@}
fail() { echo "spike-pgbouncer-image: FAILED: $*" >&2; exit 1; }
""".replace("@SERVICE_USER@", SERVICE_USER)


def heredoc_body(body: str, tag: str, what: str) -> str:
    """body for a quoted heredoc ending in tag; refused if a line of it is the delimiter."""
    if any(line == tag for line in body.splitlines()):
        raise ValueError(f"the content for {what} contains the heredoc delimiter line {tag}")
    return body if body.endswith("\n") else body + "\n"


def heredoc(path: str, body: str, tag: str) -> str:
    """`cat > path` with body verbatim (quoted heredoc: no expansion); path may use shell variables."""
    return f"cat > {path} <<'{tag}'\n{heredoc_body(body, tag, path)}{tag}\n"


def build_steps(source: PinnedSource, prefix: str) -> str:
    """Fetch, check, patch, configure, make and install PgBouncer under $ROOT{prefix}.

    Expects REGION, PGBOUNCER_SOURCE_URI, BUILD_LOG, build_dir (an empty directory), ROOT and fail() set.
    """
    q = shlex.quote
    names = " ".join(q(f.name) for f in source.files)
    sums = heredoc_body(source.sha256sum_lines(), "SPIKE_PGBOUNCER_SHA256", "the source's checksums")
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
if ! {{
  # Debian's patches in its series order (its backported security fixes among them).
  while read -r patch_name patch_opts; do
    case $patch_name in '' | '#'*) continue ;; esac
    patch "${{patch_opts:--p1}}" --forward < "debian/patches/$patch_name"
  done < debian/patches/series
  ./configure --prefix={q(prefix)} {" ".join(CONFIGURE_FLAGS)}
  make -j"$(nproc)"
  make install DESTDIR="$ROOT"
}} >> "$BUILD_LOG" 2>&1; then
  tail -n 40 "$BUILD_LOG" >&2
  fail "the PgBouncer build failed (the compiler's output is above)"
fi
cd /
"""


def version_check(binary: str) -> str:
    """Refuse a PgBouncer that is not the release pgbouncer.ini was rendered for ($PGBOUNCER_VERSION)."""
    return f"""built=$({binary} --version | awk 'NR == 1 {{ print $2 }}')
case $built in
  "$PGBOUNCER_VERSION" | "$PGBOUNCER_VERSION".*) ;;
  *) fail "pgbouncer $built was built, but pgbouncer.ini was rendered for $PGBOUNCER_VERSION" ;;
esac
"""


def template_unit() -> str:
    """pgbouncer@.service: one PgBouncer process per instance (instance = peer id), each on its own file.

    Type=notify (built --with-systemd): started means listening. LimitNOFILE comes from the user data's
    drop-in (it follows max_client_conn); spike-pgbouncer-authfile.service and the target are the user
    data's too (they name the stack's secrets and the number of processes)."""
    return f"""[Unit]
Description=PgBouncer process %i on port {PGBOUNCER_PORT}
Requires={AUTHFILE_UNIT}.service
After={AUTHFILE_UNIT}.service network-online.target
PartOf={TIER_TARGET}
OnFailure={TIER_DOWN_UNIT}.service
StartLimitIntervalSec={START_LIMIT_INTERVAL}
StartLimitBurst={START_LIMIT_BURST}

[Service]
Type=notify
User={SERVICE_USER}
RuntimeDirectory=pgbouncer-%i
RuntimeDirectoryMode=0755
ExecStart={PGBOUNCER_BIN} {CONFIG_FILE}
ExecReload=/bin/kill -HUP $MAINPID
KillSignal={STOP_SIGNAL}
TimeoutStopSec={DRAIN_SECONDS}s
Restart=on-failure
RestartSec=2s
"""


def down_unit() -> str:
    """Stops every PgBouncer process when one keeps failing, so the NLB's health check takes the host out."""
    return f"""[Unit]
Description=Stop every PgBouncer process: one keeps failing, so the NLB takes this host out

[Service]
Type=oneshot
ExecStart=/usr/bin/systemctl stop {TIER_TARGET}
"""


def host_script_sums() -> str:
    """The host scripts in `sha256sum -c` format, as this checkout has them."""
    return "".join(
        f"{hashlib.sha256((HOSTS_DIR / name).read_bytes()).hexdigest()}  {name}\n" for name in HOST_SCRIPTS
    )


def _step(name: str, body: str) -> dict[str, Any]:
    return {"name": name, "action": "ExecuteBash", "inputs": {"commands": [PRELUDE + body]}}


def _build_phase(source: PinnedSource) -> list[dict[str, Any]]:
    build_pkgs = " ".join(BUILD_PACKAGES)
    units = "$ROOT/etc/systemd/system"
    return [
        _step(
            "InstallPackages",
            f"""install -d -m 0755 "$WORK"
dnf install -y -q {" ".join(RUNTIME_PACKAGES)} {PSQL_PACKAGE}
: > "$WORK/build-only"
for pkg in {build_pkgs}; do
  rpm -q --quiet "$pkg" || echo "$pkg" >> "$WORK/build-only"
done
if [ -s "$WORK/build-only" ]; then
  mapfile -t build_only < "$WORK/build-only"
  dnf install -y -q "${{build_only[@]}}"
fi
""",
        ),
        _step(
            "BuildPinnedPgBouncer",
            f"""REGION={{{{ {PARAM_REGION} }}}}
PGBOUNCER_SOURCE_URI={{{{ {PARAM_SOURCE_URI} }}}}
BUILD_LOG="$WORK/build.log"
build_dir="$WORK/src"
rm -rf "$build_dir" && install -d -m 0700 "$build_dir"
{build_steps(source, PREFIX)}""",
        ),
        _step(
            "RefuseAnotherRelease",
            f"PGBOUNCER_VERSION={shlex.quote(source.version)}\n"
            + version_check(f'"$ROOT"{PGBOUNCER_BIN}')
            + 'echo "pgbouncer $built installed"\n',
        ),
        _step(
            "InstallHostFiles",
            f"""# The helper and the metrics script, from the stack's bucket beside the source, by sha256.
REGION={{{{ {PARAM_REGION} }}}}
SCRIPTS_URI={{{{ {PARAM_SOURCE_URI} }}}}
install -d -m 0700 "$WORK/scripts"
for name in {" ".join(HOST_SCRIPTS)}; do
  aws s3 cp --only-show-errors --region "$REGION" "$SCRIPTS_URI$name" "$WORK/scripts/$name"
done
if ! (cd "$WORK/scripts" && sha256sum -c --strict --quiet) <<'SPIKE_HOST_SCRIPTS_SHA256'
{heredoc_body(host_script_sums(), "SPIKE_HOST_SCRIPTS_SHA256", "the host scripts' checksums")}\
SPIKE_HOST_SCRIPTS_SHA256
then
  fail "the host scripts in $SCRIPTS_URI do not match this document's sha256"
fi
# What a package would add: a system user and the config directory.
if ! id -u "$SVC_USER" > /dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /sbin/nologin "$SVC_USER"
fi
install -d -m 0755 "$ROOT{CONFIG_DIR}" "$ROOT/usr/local/sbin" "{units}"
{"".join(f'install -m 0755 "$WORK/scripts/{n}" "$ROOT{p}"{chr(10)}' for n, p in HOST_SCRIPTS.items())}\
{heredoc(f'"{units}/{PGBOUNCER_UNIT}.service"', template_unit(), "SPIKE_PGBOUNCER_UNIT")}\
{heredoc(f'"{units}/{TIER_DOWN_UNIT}.service"', down_unit(), "SPIKE_PGBOUNCER_DOWN")}\
chmod 0644 "{units}/{PGBOUNCER_UNIT}.service" "{units}/{TIER_DOWN_UNIT}.service"
""",
        ),
        _step(
            "RemoveBuildTools",
            """if [ -s "$WORK/build-only" ]; then
  mapfile -t build_only < "$WORK/build-only"
  dnf remove -y -q "${build_only[@]}"
fi
rm -rf "$WORK"
""",
        ),
    ]


def _test_phase(source: PinnedSource) -> list[dict[str, Any]]:
    ports = "PG_PORT=${SPIKE_TEST_PG_PORT:-54329}\nPGB_PORT=${SPIKE_TEST_PGB_PORT:-64329}\n"
    psql_admin = (
        'runuser -u postgres -- psql -h "$WORK/pg" -p "$PG_PORT" -d postgres -X -q -v ON_ERROR_STOP=1'
    )
    # A fixed role name and a random hex password on a throwaway test instance: nothing to inject.
    role_sql = f"printf 'CREATE ROLE {TEST_ROLE} LOGIN PASSWORD %s;\\n' \"'$password'\" | {psql_admin} -f -\n"
    verifier_sql = f"SELECT rolpassword FROM pg_authid WHERE rolname = '{TEST_ROLE}'"  # noqa: S608
    return [
        _step(
            "PinnedReleaseWithItsFeatures",
            f"""version=$("$ROOT"{PGBOUNCER_BIN} --version)
[ "$(head -n 1 <<< "$version")" = {shlex.quote("PgBouncer " + source.version)} ] ||
  fail "the image's pgbouncer is not {source.version}: $(head -n 1 <<< "$version")"
grep -qx 'systemd: yes' <<< "$version" || fail "pgbouncer was built without systemd (Type=notify)"
grep -q '^adns: c-ares' <<< "$version" || fail "pgbouncer was built without c-ares"
grep -q '^tls: OpenSSL' <<< "$version" || fail "pgbouncer was built without OpenSSL"
for script in "$ROOT{HELPER_PATH}" "$ROOT{METRICS_PATH}"; do
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$script" || fail "$script is not Python"
done
psql --version > /dev/null || fail "psql is missing"
for unit in {PGBOUNCER_UNIT}.service {TIER_DOWN_UNIT}.service; do
  [ -f "$ROOT/etc/systemd/system/$unit" ] || fail "the unit $unit is missing"
done
""",
        ),
        _step(
            "LocalPostgresWithScram",
            ports
            + f"""install -d -m 0755 "$WORK"
dnf install -y -q {TEST_SERVER_PACKAGE}
install -d -m 0700 -o postgres "$WORK/pg"
runuser -u postgres -- initdb -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 \\
  > /dev/null
runuser -u postgres -- pg_ctl -D "$WORK/pg" -w -l "$WORK/pg/server.log" \\
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$WORK/pg" start > /dev/null
password=$(openssl rand -hex 24)
{role_sql}verifier=$({psql_admin} -At -c "{verifier_sql}")
case $verifier in SCRAM-SHA-256\\$*) ;; *) fail "the test role's password is not a SCRAM verifier" ;; esac
install -m 0600 /dev/null "$WORK/pgpass"
printf '127.0.0.1:%s:*:{TEST_ROLE}:%s\\n' "$PGB_PORT" "$password" > "$WORK/pgpass"
install -m 0600 -o "$SVC_USER" /dev/null "$WORK/userlist.txt"
printf '"{TEST_ROLE}" "%s"\\n' "$verifier" > "$WORK/userlist.txt"
""",
        ),
        _step(
            "NotifyStart",
            ports
            + f"""cat > "$WORK/pgbouncer.ini" <<EOF
[databases]
{TEST_ROLE} = host=127.0.0.1 port=$PG_PORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
EOF
chmod 0644 "$WORK/pgbouncer.ini"
# Type=notify: systemd-run returns once the start job is done, which is when PgBouncer sent READY=1.
systemd-run --unit={TEST_UNIT} --property=Type=notify --property=User="$SVC_USER" \\
  --property=TimeoutStartSec=30s "$ROOT"{PGBOUNCER_BIN} "$WORK/pgbouncer.ini"
systemctl is-active --quiet {TEST_UNIT} || fail "pgbouncer did not start as a Type=notify unit"
""",
        ),
        _step(
            "ScramLoginThroughPgBouncer",
            ports
            + f"""who=$(PGPASSFILE="$WORK/pgpass" psql -X -At \\
  "host=127.0.0.1 port=$PGB_PORT dbname={TEST_ROLE} user={TEST_ROLE} sslmode=disable connect_timeout=10" \\
  -c 'SELECT current_user')
[ "$who" = {TEST_ROLE} ] || fail "the SCRAM login through pgbouncer answered '$who'"
echo "SCRAM login through pgbouncer as $who"
""",
        ),
        _step(
            "StopTheTestServers",
            """systemctl stop spike-pgbouncer-image-test
runuser -u postgres -- pg_ctl -D "$WORK/pg" -w -m fast stop > /dev/null
rm -rf "$WORK"
""",
        ),
    ]


def component_document(source: PinnedSource) -> str:
    """The component's YAML (deterministic: same source and scripts, same bytes)."""
    doc = {
        "name": "spike-pgbouncer",
        "description": f"PgBouncer {source.version} from Debian's {source.debian_version}, for the hosts",
        "schemaVersion": 1.0,
        "parameters": [
            {PARAM_SOURCE_URI: {"type": "string", "description": "s3://bucket/prefix/ of the pinned source"}},
            {PARAM_REGION: {"type": "string", "description": "the stack's region"}},
        ],
        "phases": [
            {"name": "build", "steps": _build_phase(source)},
            {"name": "test", "steps": _test_phase(source)},
        ],
    }
    data = yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False, width=1000)
    if len(data) > COMPONENT_DATA_LIMIT:
        raise ValueError(
            f"the image component is {len(data)} characters, over Image Builder's {COMPONENT_DATA_LIMIT}: "
            "move content into an object beside the source (HOST_SCRIPTS)"
        )
    return data


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings (the scripts) as YAML literal blocks, readable in the console."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)
