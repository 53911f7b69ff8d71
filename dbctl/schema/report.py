"""`dbctl report`: the seed's monitoring queries, as data, for people (tables) and machines (JSON).

``collect(conn, pools=..., top_n=10) -> dict`` reads one database as ``spike_monitor`` (a pg_monitor member)
and returns exactly the sections in ``SECTIONS``, in that order:

- ``connections``: client backends by database, user, application and state (pg_stat_activity);
- ``slow_queries``: the top N statements by mean execution time (pg_stat_statements), text redacted;
- ``table_sizes``: each table with its heap, index and total size;
- ``index_usage``: each index with its scans and size;
- ``unused_indexes``: never scanned (since the statistics were reset) and not backing a constraint;
- ``bloat``: an estimate per table and btree index, with the method named (``BLOAT_METHOD``);
- ``replication``: each streaming replica's lags seen from the primary, or the replay lag on a replica;
- ``pgbouncer_pools``: PgBouncer's SHOW POOLS, where PgBouncer is reachable (``pools`` reads it);
- ``maintenance``: the scheduled jobs (pg_cron) and each one's last run (see dbctl/schema/maintenance.py);
- ``large_objects``: large objects by owner (pg_largeobject_metadata): the app's schema has none, so any row
  is worth a look, and rows owned by spike_readonly/spike_monitor are what the cleanup job removes.

Query texts: pg_stat_statements replaces the constants of plannable statements (SELECT, INSERT, UPDATE,
DELETE, MERGE) with ``$1``, ``$2`` ...; utility statements keep their literals on PostgreSQL 15 and only
partly lose them from 16 on. So ``redact_literals`` replaces every string and number literal left in a text
with ``?`` before the text leaves this module, with PostgreSQL's own lexer (pglast): the report never shows a
value a query was run with, and a text the lexer cannot read is not shown at all.

The human form (tables) is dbctl/schema/report_text.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pglast.parser
import psycopg
from pglast.parser import scan
from psycopg import sql
from psycopg.rows import dict_row

from dbctl.schema import maintenance

SECTIONS = (
    "connections",
    "slow_queries",
    "table_sizes",
    "index_usage",
    "unused_indexes",
    "bloat",
    "replication",
    "pgbouncer_pools",
    "maintenance",
    "large_objects",
)
DEFAULT_TOP_N = 10
QUERY_TEXT_CHARS = 200
BLOAT_METHOD = (
    "pgstattuple_approx (tables: exact for pages not all-visible, estimated from the free space map for the"
    " rest) and pgstatindex (btree indexes: reads the whole index; bloat = 90 % fill factor minus average"
    " leaf density)"
)
BLOAT_FALLBACK_METHOD = (
    "dead tuples / (live + dead) from pg_stat_user_tables (statistics estimate; indexes not estimated:"
    " install pgstattuple in schema spike_ops with `dbctl migrate`)"
)

Row = dict[str, Any]
Conn = psycopg.Connection[tuple[object, ...]]

# ---------------------------------------------------------------- redaction

# PostgreSQL's own lexer (pglast.parser.scan, libpg_query's copy of scan.l) with its defaults, which are the
# server's and RDS's: standard_conforming_strings on, so 'C:\' is a whole string and only E'' takes escapes.
_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "ICONST", "FCONST"})
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})
UNSCANNABLE = "(query text not shown: PostgreSQL's lexer cannot read it)"


def redact_literals(text: str) -> str:
    """The statement with every string (E'', U&'', b'', x'', $$, $tag$) and numeric literal replaced by `?`
    and comments dropped, as PostgreSQL's lexer reads it; a text the lexer rejects is not shown at all.

    Identifiers (quoted or not) and pg_stat_statements' own `$n` placeholders stay as they are."""
    try:
        tokens = scan(text)
    except pglast.parser.ParseError:
        return UNSCANNABLE
    out: list[str] = []
    position = 0
    for token in tokens:
        out.append(text[position : token.start])
        if token.name in _LITERAL_TOKENS:
            out.append("?")
        elif token.name in _COMMENT_TOKENS:
            out.append(" ")
        else:
            out.append(text[token.start : token.end + 1])
        position = token.end + 1
    out.append(text[position:])
    return " ".join("".join(out).split())


def _short(text: str) -> str:
    return text if len(text) <= QUERY_TEXT_CHARS else text[: QUERY_TEXT_CHARS - 1] + "…"


# ---------------------------------------------------------------- the sections


def _rows(
    conn: Conn, query: sql.SQL | sql.Composed | str, params: Sequence[object] | None = None
) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()]


def connections(conn: Conn) -> list[Row]:
    return _rows(
        conn,
        "SELECT coalesce(datname, '') AS database, coalesce(usename, '') AS user,"
        " coalesce(application_name, '') AS application, coalesce(state, 'unknown') AS state,"
        " count(*)::int AS count,"
        " greatest(0, coalesce(max(extract(epoch FROM now() - state_change)), 0))::float AS longest_state_s"
        " FROM pg_stat_activity WHERE backend_type = 'client backend'"
        " GROUP BY 1, 2, 3, 4 ORDER BY count DESC, 1, 2, 3, 4",
    )


def slow_queries(conn: Conn, top_n: int) -> list[Row] | Row:
    installed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
    ).fetchone()
    if not (installed and installed[0]):
        return {"error": "pg_stat_statements is not installed in this database; run `dbctl migrate`"}
    rows = _rows(
        conn,
        "SELECT s.queryid::text AS queryid, coalesce(r.rolname, '') AS user, s.calls::bigint AS calls,"
        " round(s.mean_exec_time::numeric, 3)::float AS mean_ms,"
        " round(s.total_exec_time::numeric, 1)::float AS total_ms, s.rows::bigint AS rows, s.query"
        " FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid"
        " WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY s.mean_exec_time DESC LIMIT %s",
        (top_n,),
    )
    for row in rows:
        row["query"] = _short(redact_literals(str(row["query"] or "")))
    return rows


def table_sizes(conn: Conn) -> list[Row]:
    return _rows(
        conn,
        "SELECT n.nspname AS schema, c.relname AS table, pg_table_size(c.oid) AS table_bytes,"
        " pg_indexes_size(c.oid) AS index_bytes, pg_total_relation_size(c.oid) AS total_bytes,"
        " pg_size_pretty(pg_total_relation_size(c.oid)) AS total, c.reltuples::bigint AS estimated_rows"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%'"
        " ORDER BY total_bytes DESC, 1, 2",
    )


_INDEX_STATS = sql.SQL(
    "SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index, s.idx_scan AS scans,"
    " s.idx_tup_read AS tuples_read, s.idx_tup_fetch AS tuples_fetched,"
    " pg_relation_size(s.indexrelid) AS bytes, pg_size_pretty(pg_relation_size(s.indexrelid)) AS size"
    " FROM pg_stat_user_indexes s"
)


def index_usage(conn: Conn) -> list[Row]:
    return _rows(conn, sql.SQL("{} ORDER BY s.idx_scan, bytes DESC, 1, 2, 3").format(_INDEX_STATS))


def unused_indexes(conn: Conn) -> list[Row]:
    """Never scanned, and not the index of a primary key, unique or exclusion constraint (dropping those
    would change behaviour, not only speed)."""
    return _rows(
        conn,
        sql.SQL(
            "{} JOIN pg_index i ON i.indexrelid = s.indexrelid"
            " WHERE s.idx_scan = 0 AND NOT i.indisprimary AND NOT i.indisunique"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid)"
            " ORDER BY bytes DESC, 1, 2, 3"
        ).format(_INDEX_STATS),
    )


def _pgstattuple_schema(conn: Conn) -> str | None:
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pgstattuple'"
    ).fetchone()
    return str(row[0]) if row else None


def bloat(conn: Conn) -> Row:
    schema = _pgstattuple_schema(conn)
    if schema is None:
        tables = _rows(
            conn,
            "SELECT schemaname AS schema, relname AS table, n_live_tup AS live_tuples,"
            " n_dead_tup AS dead_tuples, CASE WHEN n_live_tup + n_dead_tup = 0 THEN 0"
            "   ELSE round(100.0 * n_dead_tup / (n_live_tup + n_dead_tup), 1)::float END AS dead_percent"
            " FROM pg_stat_user_tables ORDER BY dead_percent DESC, 1, 2",
        )
        return {"method": BLOAT_FALLBACK_METHOD, "tables": tables, "indexes": []}
    ext = sql.Identifier(schema)
    tables = _rows(
        conn,
        sql.SQL(
            "SELECT n.nspname AS schema, c.relname AS table, a.table_len AS bytes,"
            " round(a.dead_tuple_percent::numeric, 1)::float AS dead_percent,"
            " round(a.approx_free_percent::numeric, 1)::float AS free_percent,"
            " round((a.dead_tuple_percent + a.approx_free_percent)::numeric, 1)::float AS bloat_percent"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
            " LATERAL {}.pgstattuple_approx(c.oid) a"
            " WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY bloat_percent DESC, 1, 2"
        ).format(ext),
    )
    indexes = _rows(
        conn,
        sql.SQL(
            "SELECT n.nspname AS schema, t.relname AS table, c.relname AS index, s.index_size AS bytes,"
            " CASE WHEN s.leaf_pages = 0 THEN NULL"
            "   ELSE round(s.avg_leaf_density::numeric, 1)::float END AS leaf_density_percent,"
            " CASE WHEN s.leaf_pages = 0 THEN 0"
            "   ELSE greatest(0, round((90 - s.avg_leaf_density)::numeric, 1))::float END AS bloat_percent"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam,"
            " LATERAL {}.pgstatindex(c.oid) s"
            " WHERE am.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY bloat_percent DESC, 1, 2, 3"
        ).format(ext),
    )
    return {"method": BLOAT_METHOD, "tables": tables, "indexes": indexes}


def large_objects(conn: Conn) -> list[Row]:
    return _rows(
        conn,
        "SELECT lomowner::regrole::text AS owner, count(*)::int AS count,"
        " lomowner::regrole::text = ANY(%s) AS cleaned_up"
        " FROM pg_largeobject_metadata GROUP BY 1, 3 ORDER BY 2 DESC, 1",
        (list(maintenance.LO_OWNERS),),
    )


def replication(conn: Conn) -> Row:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    if row and row[0]:
        replay = _rows(
            conn,
            "SELECT 'this server (a replica)' AS replica,"
            " coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float"
            "   AS replay_lag_s,"
            " pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint"
            "   AS replay_backlog_bytes",
        )
        return {"role": "replica", "replicas": replay, "note": ""}
    replicas = _rows(
        conn,
        "SELECT coalesce(application_name, '') AS replica, coalesce(client_addr::text, '') AS address,"
        " state, coalesce(extract(epoch FROM write_lag), 0)::float AS write_lag_s,"
        " coalesce(extract(epoch FROM flush_lag), 0)::float AS flush_lag_s,"
        " coalesce(extract(epoch FROM replay_lag), 0)::float AS replay_lag_s,"
        " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint AS replay_backlog_bytes"
        " FROM pg_stat_replication ORDER BY 1, 2",
    )
    return {"role": "primary", "replicas": replicas, "note": "" if replicas else "no replica"}


# ---------------------------------------------------------------- PgBouncer

POOL_COLUMNS = (
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "maxwait",
    "maxwait_us",
    "pool_mode",
)
PoolsReader = Callable[[], list[Row]]


def show_pools(conninfo: str) -> list[Row]:
    """SHOW POOLS on PgBouncer's admin console (dbname pgbouncer), as a stats_user such as spike_monitor."""
    with (
        psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute("SHOW POOLS")
        return [{k: row[k] for k in POOL_COLUMNS if k in row} for row in cur.fetchall()]


def pgbouncer_pools(pools: PoolsReader | None) -> Row:
    if pools is None:
        return {"reachable": False, "pools": [], "note": "no PgBouncer given (--pgbouncer-url)"}
    try:
        return {"reachable": True, "pools": pools(), "note": ""}
    except psycopg.Error as exc:
        reason = (exc.diag.message_primary if isinstance(exc, psycopg.Error) else None) or "connection failed"
        return {"reachable": False, "pools": [], "note": f"PgBouncer not reachable: {_first_line(reason)}"}


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "connection failed"


# ---------------------------------------------------------------- all of it


def _guarded(conn: Conn, read: Callable[[], Any]) -> Any:
    """One section in a savepoint: its rows, or {"error": <the server's reason>} when reading it failed (a
    privilege the monitor role lacks), so the other sections still report."""
    try:
        with conn.transaction():
            return read()
    except psycopg.Error as exc:
        reason = exc.diag.message_primary if exc.sqlstate else None
        return {"error": _first_line(reason or str(exc))}


def collect(conn: Conn, *, pools: PoolsReader | None = None, top_n: int = DEFAULT_TOP_N) -> dict[str, Any]:
    """Every section, in SECTIONS order. Read-only: runs in a READ ONLY transaction that is rolled back.
    A section that cannot be read is {"error": …}; the others still report."""
    readers: dict[str, Callable[[], Any]] = {
        "connections": lambda: connections(conn),
        "slow_queries": lambda: slow_queries(conn, top_n),
        "table_sizes": lambda: table_sizes(conn),
        "index_usage": lambda: index_usage(conn),
        "unused_indexes": lambda: unused_indexes(conn),
        "bloat": lambda: bloat(conn),
        "replication": lambda: replication(conn),
        "maintenance": lambda: maintenance.job_report(conn),
        "large_objects": lambda: large_objects(conn),
    }
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        report = {key: _guarded(conn, read) for key, read in readers.items()}
    report["pgbouncer_pools"] = pgbouncer_pools(pools)
    return {key: report[key] for key in SECTIONS}


def failed_sections(report: Mapping[str, Any]) -> list[str]:
    """The sections whose reading failed (slow_queries without pg_stat_statements among them)."""
    return [key for key in SECTIONS if isinstance(report.get(key), Mapping) and "error" in report[key]]


def nothing_read(report: Mapping[str, Any]) -> bool:
    """True when every database section failed: the report then exits non-zero."""
    return set(failed_sections(report)) >= set(SECTIONS) - {"pgbouncer_pools"}
