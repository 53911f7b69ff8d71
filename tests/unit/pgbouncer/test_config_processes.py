"""Several PgBouncer processes on one port: per-process files from the one renderer, and its refusals."""

import pytest
from pydantic import ValidationError

from dbctl.pgbouncer.config import PgBouncerConfig, PgBouncerConfigError, ServerTls, render_ini
from tests.unit.pgbouncer.test_config import parse

PER_PROCESS = {"so_reuseport", "peer_id", "unix_socket_dir", "pidfile", "logfile"}


def config(**overrides: object) -> PgBouncerConfig:
    values: dict[str, object] = {
        "version": (1, 24),
        "primary_host": "db-primary.internal",
        "auth_file": "/run/pgbouncer-auth/userlist.txt",
        "server_tls": ServerTls(ca_file="/etc/pgbouncer/rds-ca.pem"),
        "processes": 3,
        "unix_socket_dir": "/run/pgbouncer-{peer_id}",
        "pidfile": "/var/run/pgb/{peer_id}.pid",
        "logfile": "/var/log/pgb/{peer_id}.log",
    }
    values.update(overrides)
    return PgBouncerConfig.model_validate(values)


def test_each_process_gets_its_own_peer_id_paths_and_so_reuseport_on_one_port() -> None:
    cfg = config()
    inis = {i: parse(render_ini(cfg, i)) for i in cfg.peer_ids}
    assert list(inis) == [1, 2, 3]
    for i, ini in inis.items():
        p = ini["pgbouncer"]
        assert p["so_reuseport"] == "1"
        assert p["peer_id"] == str(i)
        assert p["listen_port"] == "6543"
        assert p["unix_socket_dir"] == f"/run/pgbouncer-{i}"
        assert p["pidfile"] == f"/var/run/pgb/{i}.pid"
        assert p["logfile"] == f"/var/log/pgb/{i}.log"
    # Everything else is the same in every file, [peers] included.
    shared = [
        ({k: v for k, v in ini["pgbouncer"].items() if k not in PER_PROCESS}, dict(ini["peers"]))
        for ini in inis.values()
    ]
    assert shared[0] == shared[1] == shared[2]


def test_peers_list_every_process_by_its_socket_dir_and_the_listen_port() -> None:
    peers = dict(parse(render_ini(config(listen_port=7000), 2))["peers"])
    assert peers == {str(i): f"host=/run/pgbouncer-{i} port=7000" for i in (1, 2, 3)}


def test_one_process_renders_no_peering_and_no_socket() -> None:
    cfg = config(processes=1, unix_socket_dir="", pidfile="/run/pgb.pid", logfile=None)
    text = render_ini(cfg)
    ini = parse(text)
    assert "peers" not in ini
    assert "so_reuseport" not in ini["pgbouncer"] and "peer_id" not in ini["pgbouncer"]
    assert ini["pgbouncer"]["unix_socket_dir"] == ""
    assert ini["pgbouncer"]["pidfile"] == "/run/pgb.pid"
    assert "logfile" not in ini["pgbouncer"]


def test_processes_below_1_19_are_refused_naming_the_version() -> None:
    with pytest.raises(ValidationError, match=r"processes 2 needs PgBouncer >= 1\.19.*1\.18"):
        config(version=(1, 18), processes=2)
    assert config(version=(1, 19), processes=2).processes == 2
    assert config(version=(1, 18), processes=1, unix_socket_dir="", pidfile=None, logfile=None)


@pytest.mark.parametrize("field", ["unix_socket_dir", "pidfile", "logfile"])
def test_several_processes_need_a_path_per_process(field: str) -> None:
    with pytest.raises(ValidationError, match=rf"put \{{peer_id\}} in {field}"):
        config(**{field: "/run/shared"})


def test_several_processes_need_a_socket_dir() -> None:
    with pytest.raises(ValidationError, match="unix_socket_dir is required"):
        config(unix_socket_dir="")


def test_a_placeholder_with_one_process_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"pidfile, logfile hold \{peer_id\} but processes is 1"):
        config(processes=1, unix_socket_dir="")


def test_a_socket_path_too_long_for_sockaddr_un_is_refused() -> None:
    with pytest.raises(ValidationError, match="over the 107 a Unix socket allows"):
        config(unix_socket_dir="/" + "d" * 100 + "/{peer_id}")


def test_a_socket_dir_that_would_break_the_peers_line_is_refused() -> None:
    with pytest.raises(ValidationError, match="unix_socket_dir must be empty or an absolute path"):
        config(unix_socket_dir="/run/pgb {peer_id}")


def test_rendering_a_process_that_is_not_in_the_group_is_refused() -> None:
    with pytest.raises(PgBouncerConfigError, match=r"peer_id 4 is not one of this config's processes 1\.\.3"):
        render_ini(config(), 4)
