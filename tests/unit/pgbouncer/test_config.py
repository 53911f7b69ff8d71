"""The pgbouncer.ini / userlist.txt renderer: pure, version-aware, verifiers only."""

import configparser
import os
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from dbctl.core.names import (
    APP_ROLE,
    DATABASE_NAME,
    MIGRATOR_ROLE,
    MONITOR_ROLE,
    READ_POOL_DATABASE,
    READONLY_ROLE,
    login_users,
)
from dbctl.core.scram import scram_verifier
from dbctl.pgbouncer.config import (
    POOLED_ROLES,
    ClientTls,
    PgBouncerConfig,
    PgBouncerConfigError,
    ServerTls,
    parse_version,
    render_ini,
    render_userlist,
)
from dbctl.schema import session_reset


def config(**overrides: object) -> PgBouncerConfig:
    values: dict[str, object] = {
        "version": (1, 18),
        "primary_host": "db-primary.internal",
        "auth_file": "/run/pgbouncer/userlist.txt",
        "server_tls": ServerTls(ca_file="/etc/pgbouncer/rds-ca.pem"),
    }
    values.update(overrides)
    return PgBouncerConfig.model_validate(values)


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@pytest.fixture(scope="module")
def verifiers() -> dict[str, str]:
    """Both users of every pooled role (a rotation's overlap)."""
    users = [user for role in POOLED_ROLES for user in login_users(role)]
    return {user: scram_verifier(f"pw-{user}", os.urandom(16)) for user in users}


def test_seed_settings_and_auth_are_rendered() -> None:
    ini = parse(render_ini(config()))["pgbouncer"]
    assert ini["listen_port"] == "6543"
    assert ini["pool_mode"] == "transaction"
    assert ini["auth_type"] == "scram-sha-256"
    assert ini["auth_file"] == "/run/pgbouncer/userlist.txt"
    seed = {
        "max_client_conn": "1000",
        "default_pool_size": "20",
        "min_pool_size": "5",
        "reserve_pool_size": "5",
        "reserve_pool_timeout": "5",
        "server_lifetime": "3600",
        "server_idle_timeout": "600",
    }
    assert {key: ini[key] for key in seed} == seed
    assert ini["stats_users"] == f"{MONITOR_ROLE}_a,{MONITOR_ROLE}_b"
    assert "admin_users" not in ini


def test_backend_tls_is_verify_full_against_the_ca() -> None:
    ini = parse(render_ini(config()))["pgbouncer"]
    assert ini["server_tls_sslmode"] == "verify-full"
    assert ini["server_tls_ca_file"] == "/etc/pgbouncer/rds-ca.pem"


def test_verify_full_without_a_ca_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs ca_file"):
        ServerTls(sslmode="verify-full")


def test_client_tls_is_off_by_default_and_configurable() -> None:
    assert "client_tls_sslmode" not in parse(render_ini(config()))["pgbouncer"]
    tls = ClientTls(sslmode="require", key_file="/etc/pgbouncer/tls.key", cert_file="/etc/pgbouncer/tls.crt")
    ini = parse(render_ini(config(client_tls=tls)))["pgbouncer"]
    assert ini["client_tls_sslmode"] == "require"
    assert ini["client_tls_key_file"] == "/etc/pgbouncer/tls.key"
    assert ini["client_tls_cert_file"] == "/etc/pgbouncer/tls.crt"
    with pytest.raises(ValidationError, match="needs key_file and cert_file"):
        ClientTls(sslmode="require")


def test_read_pool_points_at_the_primary_without_a_replica() -> None:
    dbs = parse(render_ini(config(primary_port=5433)))["databases"]
    assert (
        dbs[DATABASE_NAME]
        == f"host=db-primary.internal port=5433 dbname={DATABASE_NAME} max_db_connections=25"
    )
    assert dbs[READ_POOL_DATABASE] == dbs[DATABASE_NAME]


def test_read_pool_points_at_the_replica_when_there_is_one() -> None:
    rendered = config(read_hosts=("db-replica.internal",), default_pool_size=10, reserve_pool_size=2)
    dbs = parse(render_ini(rendered))["databases"]
    assert dbs[READ_POOL_DATABASE] == (
        f"host=db-replica.internal port=5432 dbname={DATABASE_NAME} max_db_connections=12"
    )
    assert "db-primary.internal" in dbs[DATABASE_NAME]
    assert rendered.pools_on_primary == 1
    assert config().pools_on_primary == 2


def test_read_pool_lists_every_replica_round_robin() -> None:
    replicas = ("db-replica-1.internal", "db-replica-2.internal", "db-replica-3.internal")
    dbs = parse(render_ini(config(version=(1, 25), read_hosts=replicas)))["databases"]
    assert dbs[READ_POOL_DATABASE] == (
        f"host={','.join(replicas)} port=5432 dbname={DATABASE_NAME} max_db_connections=25 "
        "load_balance_hosts=round-robin"
    )
    assert "db-replica" not in dbs[DATABASE_NAME]


def test_before_1_24_the_host_list_has_no_load_balance_hosts_key() -> None:
    # 1.17-1.23 know host lists (always round-robin) but refuse to start on an unknown key; verify-ca
    # because verify-full over a host list needs 1.25.
    verify_ca = ServerTls(sslmode="verify-ca", ca_file="/etc/pgbouncer/rds-ca.pem")
    dbs = parse(render_ini(config(version=(1, 18), read_hosts=("r1", "r2"), server_tls=verify_ca)))[
        "databases"
    ]
    assert dbs[READ_POOL_DATABASE] == f"host=r1,r2 port=5432 dbname={DATABASE_NAME} max_db_connections=25"
    single = parse(render_ini(config(version=(1, 24), read_hosts=("r1",))))["databases"]
    assert "load_balance_hosts" not in single[READ_POOL_DATABASE]
    listed = parse(render_ini(config(version=(1, 24), read_hosts=("r1", "r2"), server_tls=verify_ca)))
    assert listed["databases"][READ_POOL_DATABASE].endswith(" load_balance_hosts=round-robin")


def test_verify_full_over_a_host_list_is_refused_before_1_25() -> None:
    for version in ((1, 18), (1, 24)):
        with pytest.raises(
            ValidationError,
            match=r"whole host list.*pgbouncer#1303.*>= 1.25 \(pgbouncer.version\), or one replica",
        ):
            config(version=version, read_hosts=("r1", "r2"))
    assert config(version=(1, 24), read_hosts=("r1",)).has_replica


def test_max_prepared_statements_only_from_1_21() -> None:
    for version, expected in (((1, 18), False), ((1, 20), False), ((1, 21), True), ((1, 24), True)):
        ini = parse(render_ini(config(version=version)))["pgbouncer"]
        assert ("max_prepared_statements" in ini) is expected, version
    assert parse(render_ini(config(version="1.24.1")))["pgbouncer"]["max_prepared_statements"] == "200"


def test_versions_older_than_supported_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"older than the oldest supported 1\.18"):
        config(version=(1, 17))
    with pytest.raises(PgBouncerConfigError, match=r"MAJOR\.MINOR"):
        parse_version("latest")
    assert parse_version("1.18.0") == (1, 18)


def test_every_setting_has_a_reason_on_the_line_above() -> None:
    for version in ((1, 18), (1, 24)):
        tls = ClientTls(sslmode="require", key_file="/k", cert_file="/c")
        lines = render_ini(config(version=version, client_tls=tls, read_hosts=("r1",))).splitlines()
        settings = [i for i, line in enumerate(lines) if "=" in line and not line.startswith(";")]
        assert len(settings) > 20
        for i in settings:
            assert lines[i - 1].startswith(";; ") and len(lines[i - 1]) > 10, lines[i]


def test_startup_parameters_and_logging_choices() -> None:
    ini = parse(render_ini(config()))["pgbouncer"]
    # `options` is not ignored: PgBouncer then applies the -c parameters it tracks and refuses any other,
    # where listing it dropped them all silently (tests/integration/pgbouncer/test_session_reset.py).
    assert ini["ignore_startup_parameters"] == "extra_float_digits,search_path"
    assert ini["log_connections"] == "0"
    assert ini["log_disconnections"] == "0"
    assert "verbose" not in ini  # statements are never logged at the default verbosity
    assert ini["query_wait_timeout"] == "30"
    assert ini["server_connect_timeout"] == "5"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"primary_host": "db host"}, "primary_host"),
        ({"auth_file": "userlist.txt"}, "absolute path"),
        ({"logfile": "/var/log/x\nadmin_users = evil"}, "absolute path"),
        ({"min_pool_size": 30}, "min_pool_size 30 exceeds default_pool_size 20"),
        ({"read_port": 5433}, "read_port is set without read_hosts"),
        ({"read_hosts": ("r1", "r1")}, "read_hosts lists a host twice"),
        ({"read_hosts": ("r1,r2",)}, "read_hosts"),
        ({"listen_port": 70000}, "listen_port"),
        ({"pool_mode": "sometimes"}, "pool_mode"),
        ({"max_client_conn": 0}, "max_client_conn"),
        ({"stats_users": ("Robert'); DROP",)}, "stats_users"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_bad_settings_fail_with_the_field_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**overrides)


def test_userlist_holds_verifiers_of_the_pooled_roles(verifiers: dict[str, str]) -> None:
    text = render_userlist(verifiers)
    lines = text.splitlines()
    users = [f"{r}{s}" for r in (APP_ROLE, READONLY_ROLE, MONITOR_ROLE) for s in ("_a", "_b")]
    assert [line.split(" ")[0] for line in lines] == [f'"{u}"' for u in users]
    for line, user in zip(lines, users, strict=True):
        assert line == f'"{user}" "{verifiers[user]}"'
    assert text.endswith("\n")


def test_userlist_needs_one_user_per_pooled_role_only(verifiers: dict[str, str]) -> None:
    """Outside a rotation the inactive user may have no verifier yet (a new stack): it is left out."""
    active = {user: v for user, v in verifiers.items() if not user.endswith("_b")}
    assert [line.split(" ")[0] for line in render_userlist(active).splitlines()] == [
        f'"{r}_a"' for r in (APP_ROLE, READONLY_ROLE, MONITOR_ROLE)
    ]


def test_userlist_refuses_a_plaintext_password_without_echoing_it(verifiers: dict[str, str]) -> None:
    with pytest.raises(PgBouncerConfigError, match="not a SCRAM-SHA-256 verifier") as caught:
        render_userlist({**verifiers, f"{APP_ROLE}_b": "hunter2-plaintext"})
    assert "hunter2" not in str(caught.value)


def test_userlist_refuses_missing_and_unpooled_roles(verifiers: dict[str, str]) -> None:
    with pytest.raises(PgBouncerConfigError, match=f"no verifier for {READONLY_ROLE}"):
        render_userlist({k: v for k, v in verifiers.items() if not k.startswith(READONLY_ROLE)})
    with pytest.raises(PgBouncerConfigError, match=f"{MIGRATOR_ROLE} do not connect through PgBouncer"):
        render_userlist({**verifiers, MIGRATOR_ROLE: verifiers[f"{APP_ROLE}_a"]})
    # The NOLOGIN role itself never logs in: its name in the userlist is refused too.
    with pytest.raises(PgBouncerConfigError, match=f"{APP_ROLE} do not connect through PgBouncer"):
        render_userlist({**verifiers, APP_ROLE: verifiers[f"{APP_ROLE}_a"]})


def test_recovery_and_reset_settings_are_rendered_with_reasons() -> None:
    """server_login_retry 15 made a 0.3 s restart a 15 s outage; session state leaked between clients."""
    text = render_ini(config())
    ini = parse(text)["pgbouncer"]
    assert ini["server_login_retry"] == "1"
    assert ini["dns_max_ttl"] == "5"
    assert ini["server_reset_query"] == session_reset.RESET_QUERY
    assert ini["server_reset_query_always"] == "1"
    lines = text.splitlines()
    for key in ("server_login_retry", "dns_max_ttl", "server_reset_query_always"):
        above = lines[lines.index(f"{key} = {ini[key]}") - 1]
        assert above.startswith(";; ") and len(above) > 20
    assert (
        parse(render_ini(config(server_reset_query_always=False)))["pgbouncer"]["server_reset_query_always"]
        == "0"
    )
    with pytest.raises(ValidationError, match="server_reset_query"):
        config(server_reset_query="DISCARD ALL\nadmin_users = x")


def test_tls_versions_for_both_legs_are_rendered() -> None:
    """1.2 and 1.3 on both legs (1.3 negotiated where both ends have it), OpenSSL's groups (issue 15)."""
    tls = ClientTls(sslmode="require", key_file="/k", cert_file="/c")
    for version in ((1, 18), (1, 24)):  # every one of these keys is in 1.18's doc/config.md too
        ini = parse(render_ini(config(version=version, client_tls=tls)))["pgbouncer"]
        assert ini["server_tls_protocols"] == "secure"
        assert ini["client_tls_protocols"] == "secure"
        assert ini["client_tls_ciphers"] == "default"
        assert ini["client_tls_ecdhcurve"] == "auto"
    chosen = ClientTls(sslmode="require", key_file="/k", cert_file="/c", protocols="tlsv1.2,tlsv1.3")
    assert (
        parse(render_ini(config(client_tls=chosen)))["pgbouncer"]["client_tls_protocols"] == "tlsv1.2,tlsv1.3"
    )


def test_tls_versions_are_not_rendered_for_a_leg_without_tls() -> None:
    ini = parse(render_ini(config(server_tls=ServerTls(sslmode="disable"))))["pgbouncer"]
    assert "server_tls_protocols" not in ini
    assert not [key for key in ini if key.startswith("client_tls_")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ServerTls(sslmode="disable", protocols="tlsv1.4"), "protocols"),
        (lambda: ServerTls(sslmode="disable", protocols="sslv3"), "protocols"),
        (lambda: ClientTls(protocols="secure\nadmin_users = x"), "protocols"),
        (lambda: ClientTls(ciphers="HIGH ; admin_users = x"), "ciphers"),
        (lambda: ClientTls(ecdhcurve=""), "ecdhcurve"),
    ],
)
def test_bad_tls_settings_fail_with_the_field_named(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make()


def test_tcp_defer_accept_is_off() -> None:
    """Measured (bench/pgbouncer.py --compare-settings): less PgBouncer CPU per connecting client."""
    assert parse(render_ini(config()))["pgbouncer"]["tcp_defer_accept"] == "0"
    assert parse(render_ini(config(tcp_defer_accept=True)))["pgbouncer"]["tcp_defer_accept"] == "1"
