"""Migration files, the init migration's Prisma format, URL handling and the roles' SQL composition."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg import sql

from dbctl.core import roles
from dbctl.core.errors import DbctlError
from dbctl.schema import migrate, statements
from dbctl.schema.connection import connect, parse_target


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).mkdir(parents=True)
    (directory / name / "migration.sql").write_text(text)


def test_migrations_load_in_name_order_with_prisma_checksums(tmp_path: Path) -> None:
    write(tmp_path, "20260102000000_second", "SELECT 2;\n")
    write(tmp_path, "20260101000000_first", "SELECT 1;\n")
    (tmp_path / "migration_lock.toml").write_text('provider = "postgresql"\n')
    loaded = migrate.load_migrations(tmp_path)
    assert [m.name for m in loaded] == ["20260101000000_first", "20260102000000_second"]
    assert loaded[0].checksum == hashlib.sha256(b"SELECT 1;\n").hexdigest()
    assert not loaded[0].no_transaction


def test_bad_migration_directories_are_named(tmp_path: Path) -> None:
    write(tmp_path, "init", "SELECT 1;")
    with pytest.raises(DbctlError, match="'init' must be named <14-digit timestamp>_<name>"):
        migrate.load_migrations(tmp_path)
    with pytest.raises(DbctlError, match="does not exist"):
        migrate.load_migrations(tmp_path / "nope")
    (tmp_path / "init").rename(tmp_path / "20260101000000_x")
    (tmp_path / "20260101000000_x" / "migration.sql").unlink()
    with pytest.raises(DbctlError, match=r"has no migration\.sql"):
        migrate.load_migrations(tmp_path)


def test_no_transaction_marker_and_statement_split(tmp_path: Path) -> None:
    text = (
        f"{migrate.NO_TRANSACTION_MARKER}\n-- CreateIndex\n"
        "CREATE INDEX CONCURRENTLY a ON t(x);\n\nDROP INDEX b;\n"
    )
    write(tmp_path, "20260101000000_idx", text)
    (only,) = migrate.load_migrations(tmp_path)
    assert only.no_transaction
    assert statements.split(text) == ["CREATE INDEX CONCURRENTLY a ON t(x);", "DROP INDEX b;"]


def test_init_migration_follows_prisma_format() -> None:
    (init,) = migrate.load_migrations()
    text = init.sql_text
    assert not init.no_transaction
    # Every statement sits under one of Prisma's section headers, in Prisma's order.
    headers = re.findall(r"^-- (\w+)$", text, flags=re.MULTILINE)
    order = ["CreateEnum", "CreateTable", "CreateIndex", "AddForeignKey"]
    assert headers == sorted(headers, key=order.index)
    assert len(headers) == text.count(";")
    assert (
        (migrate.MIGRATIONS_DIR / "migration_lock.toml")
        .read_text()
        .strip()
        .endswith('provider = "postgresql"')
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@db.example:5433/spike_land?sslmode=verify-full", "u@db.example:5433/spike_land"),
        ("host=h user=u password=pw dbname=d", "u@h:5432/d"),
    ],
)
def test_targets_are_printed_without_passwords(url: str, expected: str) -> None:
    assert str(parse_target(url)) == expected


def test_bad_urls_never_echo_the_url() -> None:
    for url in ("postgresql://u:supersecret@[bad", "not a url with password=supersecret"):
        with pytest.raises(DbctlError) as err:
            parse_target(url)
        assert "supersecret" not in str(err.value)
    with pytest.raises(DbctlError, match="names no host"):
        parse_target("postgresql:///spike_land")


def test_acl_changes_grant_missing_and_revoke_extra() -> None:
    changes = roles._acl_changes(
        "table User",
        sql.SQL("TABLE {}").format(sql.Identifier("public", "User")),
        {("spike_rw", "SELECT"), ("spike_rw", "TRUNCATE"), ("PUBLIC", "SELECT")},
        frozenset({("spike_rw", "SELECT"), ("spike_rw", "INSERT")}),
    )
    assert [c.statement.as_string(None) for c in changes] == [
        'REVOKE SELECT ON TABLE "public"."User" FROM PUBLIC',
        'REVOKE TRUNCATE ON TABLE "public"."User" FROM "spike_rw"',
        'GRANT INSERT ON TABLE "public"."User" TO "spike_rw"',
    ]
    with pytest.raises(ValueError, match="unknown privilege"):
        roles._privs(["SELECT; DROP TABLE x"])


@pytest.mark.parametrize("text", ["", "\n  \n", "-- nothing yet\n", "/* later */\n-- todo\n;\n"])
def test_a_migration_without_sql_is_refused_before_anything_runs(tmp_path: Path, text: str) -> None:
    """Today an empty file was applied and recorded, and filling it in later was refused for good."""
    write(tmp_path, "20260101000000_empty", text)
    with pytest.raises(DbctlError, match=r"20260101000000_empty/migration\.sql has no SQL") as err:
        migrate.load_migrations(tmp_path)
    assert len(str(err.value).splitlines()) == 1


def test_a_non_utf8_migration_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "20260101000000_latin1", "")
    (tmp_path / "20260101000000_latin1" / "migration.sql").write_bytes(b"SELECT 'caf\xe9';\n")
    with pytest.raises(DbctlError, match=r"is not UTF-8 \(byte 11\)") as err:
        migrate.load_migrations(tmp_path)
    assert len(str(err.value).splitlines()) == 1


def test_comments_and_strings_still_count_as_sql(tmp_path: Path) -> None:
    write(tmp_path, "20260101000000_ok", "-- a comment\nSELECT '--not a comment';\n")
    assert [m.name for m in migrate.load_migrations(tmp_path)] == ["20260101000000_ok"]


def test_the_stray_lock_roles_are_the_pooled_roles() -> None:
    from dbctl.core.names import login_users
    from dbctl.pgbouncer.config import POOLED_ROLES

    pooled_users = {user for role in POOLED_ROLES for user in login_users(role)}
    assert set(migrate.NOT_MIGRATORS) == set(POOLED_ROLES) | pooled_users


@pytest.mark.parametrize(
    "url",
    ["postgresql://u:pw@127.0.0.1/db?sslmod=require", "host=127.0.0.1 sslmod=require password=pw"],
)
def test_an_unknown_url_parameter_is_named(url: str) -> None:
    """Today: a generic "malformed" message."""
    with pytest.raises(DbctlError, match=r"unknown parameter 'sslmod'") as err:
        parse_target(url)
    assert "pw" not in str(err.value).replace("PASSWORD", "")


@contextmanager
def fake_server(reply: bytes) -> Iterator[int]:
    """A 127.0.0.1 listener that answers libpq's first packet with reply (b"" closes at once)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with contextlib.suppress(OSError):
            client, _ = listener.accept()
            with client:
                client.recv(8)
                if reply:
                    client.sendall(reply)
                    client.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def test_a_connection_error_keeps_libpq_s_whole_cause(tmp_path: Path) -> None:
    """Today only the last line: "Either provide the file…" without naming the file."""
    missing = tmp_path / "no-such-ca.pem"
    with fake_server(b"S") as port:  # "S": go ahead with TLS, so libpq loads the root certificate
        url = f"postgresql://u:s3cret@127.0.0.1:{port}/db?sslmode=verify-full&sslrootcert={missing}"
        with pytest.raises(DbctlError) as err:
            connect(url)
    message = str(err.value)
    assert f'root certificate file "{missing}" does not exist' in message
    assert "Either provide the file" in message
    assert len(message.splitlines()) == 1 and "s3cret" not in message


def test_a_dropped_connection_says_the_server_closed_it() -> None:
    """Today only "before or while processing the request."."""
    with fake_server(b"") as port, pytest.raises(DbctlError) as err:
        connect(f"postgresql://u:s3cret@127.0.0.1:{port}/db?sslmode=disable")
    message = str(err.value)
    assert "server closed the connection unexpectedly" in message
    assert len(message.splitlines()) == 1 and "s3cret" not in message
