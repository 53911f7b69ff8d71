"""`dbctl local rotate`: a pooled role's password rotation on the local stack, with no downtime.

The steps of dbctl.rotation against the local servers, with `.local/credentials.json` standing in for the
role's secret (its entry's ``pending`` and ``previous`` are Secrets Manager's AWSPENDING and AWSPREVIOUS):

1. create: a new password + verifier for the inactive user, saved as the entry's ``pending`` (mode 0600,
   atomically) before anything else, so a killed run leaves it to be reused;
2. set: ``ALTER ROLE`` the inactive user on the primary (the replica follows), then PgBouncer's userlist
   from credentials.json (active, previous and pending users) and a SIGHUP; the previous user's old entry
   gives way to the pending one, as on AWS;
3. test: a login as the pending user through PgBouncer, on the role's own pool;
4. finish: the pending user becomes the active one (``previous`` is the old active one), and `.env` names it.

Killed anywhere, the stack keeps serving: before finish the active user is untouched everywhere; after it,
both users are valid. Running `rotate` again resumes a rotation whose ``pending`` is saved.
"""

from __future__ import annotations

import dataclasses
import os
import signal

import psycopg

from dbctl.core import names, rotation
from dbctl.local.bouncer import pgbouncer_running, pgbouncer_version, reload_pgbouncer
from dbctl.local.lifecycle import write_env
from dbctl.local.stack import Echo, Stack
from dbctl.local.state import Credential, LocalError, save_credentials
from dbctl.postgres.osproc import HOST

STEPS = ("create", "set", "test", "finish")
POOL_DATABASE = rotation.POOL_DATABASE


def _connect_through_pgbouncer(
    stack: Stack, role: str, credential: Credential
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=HOST,
        port=stack.state.pgbouncer_port,
        dbname=POOL_DATABASE[role],
        user=credential.username,
        password=credential.password,
        sslmode="verify-full",
        sslrootcert=str(stack.cluster.ca_file),
        connect_timeout=5,
        application_name="dbctl local rotate",
        autocommit=True,
    )


def rotate(stack: Stack, role: str, echo: Echo, *, kill_after: str | None = None) -> Credential:
    """Rotate role's password (a pooled role); return its new credential. The caller holds stack_lock.

    kill_after (tests only): SIGKILL this process right after that step, as a crash there would."""
    if role not in names.ALTERNATING_ROLES:
        raise LocalError(
            f"{role} does not rotate here; the pooled roles are {', '.join(names.ALTERNATING_ROLES)}"
        )
    if not (stack.cluster.is_running() and pgbouncer_running(stack)):
        raise LocalError("the local stack is not running; start it with `dbctl local up`")

    def done(step: str, line: str) -> None:
        echo(f"{role}: {step}: {line}")
        if kill_after == step:
            os.kill(os.getpid(), signal.SIGKILL)

    current = stack.creds[role]
    if current.pending is None:
        new = rotation.next_secret(role, current.username)
        pending = Credential(new.username, new.password, new.scram_verifier)
        current = dataclasses.replace(current, pending=pending)
        stack.creds[role] = current
        save_credentials(stack.paths, stack.creds)
        done("create", f"a new password for {pending.username} (saved as pending in credentials.json)")
    else:
        pending = current.pending
        done("create", f"resuming the rotation to {pending.username} (its pending password is saved)")

    with psycopg.connect(stack.cluster.admin_conninfo(), autocommit=True) as conn:
        changed = rotation.set_password(conn, pending.username, pending.scram_verifier)
    reload_pgbouncer(stack)
    done("set", f"{pending.username}'s verifier {'set' if changed else 'already set'}; PgBouncer reloaded")

    rotation.check_login(lambda: _connect_through_pgbouncer(stack, role, pending), pending.username)
    done("test", f"{pending.username} logs in through PgBouncer ({POOL_DATABASE[role]})")

    previous = Credential(current.username, current.password, current.scram_verifier)
    switched = Credential(pending.username, pending.password, pending.scram_verifier, previous=previous)
    stack.creds[role] = switched
    save_credentials(stack.paths, stack.creds)
    write_env(stack, pgbouncer_version())
    done(
        "finish", f"{switched.username} is active (credentials.json, .env); {previous.username} keeps working"
    )
    return switched
