#!/usr/bin/env python3
"""PgBouncer host helper: write the auth_file from the login roles' SCRAM verifiers in Secrets Manager.

This file is not imported by the Pulumi program: `components/pgbouncer_userdata.py` embeds it verbatim in
the user data, and a systemd service runs it on the PgBouncer host (Amazon Linux 2023: system Python 3.9,
stdlib only, the preinstalled AWS CLI v2 with the instance role's credentials) at boot and on a timer.

Only each secret's `scram_verifier` key is used; the plaintext `password` key is never read, printed or
written. A value that is not a SCRAM-SHA-256 verifier is refused (the old file stays). The file is written
atomically, mode 0600, owned by PgBouncer's service user, and PgBouncer is reloaded only when it changed.
Nothing secret reaches stdout/stderr (and so the journal or the cloud-init log): only role names and ARNs.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

VERIFIER_KEY = "scram_verifier"  # dbctl.names.SECRET_VERIFIER_KEY (this file must stay standalone)
_VERIFIER = re.compile(
    r"SCRAM-SHA-256\$[1-9][0-9]*:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}="
)
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

SecretFetcher = Callable[[str], str]


class AuthFileError(RuntimeError):
    """The auth file could not be built; the message names the role or secret and never holds a secret."""


def aws_cli_fetcher(region: str) -> SecretFetcher:
    """SecretString of a secret ARN via the AWS CLI (instance role credentials from IMDSv2)."""

    def fetch(arn: str) -> str:
        cmd = ["aws", "secretsmanager", "get-secret-value", "--region", region, "--secret-id", arn]
        cmd += ["--query", "SecretString", "--output", "text"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            # The CLI's error text names the secret and the reason (AccessDenied, ...), never its value.
            raise AuthFileError(f"could not read secret {arn}: {done.stderr.strip()}")
        return done.stdout

    return fetch


def render(secrets: Sequence[tuple[str, str]], fetch: SecretFetcher) -> str:
    """The auth_file text: one `"role" "SCRAM-SHA-256$..."` line per (role, secret ARN)."""
    lines = []
    for role, arn in secrets:
        try:
            document = json.loads(fetch(arn))
        except json.JSONDecodeError:
            raise AuthFileError(f"secret {arn} (role {role}) is not a JSON object") from None
        verifier = document.get(VERIFIER_KEY) if isinstance(document, dict) else None
        if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
            raise AuthFileError(
                f"secret {arn} (role {role}) has no SCRAM-SHA-256 verifier under key {VERIFIER_KEY!r}; "
                "fix: store the verifier (dbctl.scram.scram_verifier), never a plaintext password"
            )
        lines.append(f'"{role}" "{verifier}"\n')
    return "".join(lines)


def write_if_changed(path: str, text: str, owner: str) -> bool:
    """Atomically replace path with text (0600, owned by owner); False when it already held text."""
    try:
        with open(path, encoding="utf-8") as current:
            if current.read() == text:
                return False
    except FileNotFoundError:
        pass
    user = pwd.getpwnam(owner)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".authfile.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chown(tmp, user.pw_uid, user.pw_gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def reload_if_active(unit: str) -> bool:
    """Reload unit (PgBouncer re-reads auth_file on SIGHUP) if it runs; True when reloaded."""
    if subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode != 0:
        return False
    subprocess.run(["systemctl", "reload", unit], check=True)
    return True


def _role_secret(value: str) -> tuple[str, str]:
    role, sep, arn = value.partition("=")
    if not sep or not _ROLE.fullmatch(role) or not arn.startswith("arn:"):
        raise argparse.ArgumentTypeError(f"expected ROLE=SECRET_ARN, got {value!r}")
    return role, arn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--region", required=True)
    parser.add_argument("--auth-file", required=True)
    parser.add_argument("--owner", required=True, help="PgBouncer's service user")
    parser.add_argument("--secret", type=_role_secret, action="append", required=True, metavar="ROLE=ARN")
    parser.add_argument("--reload-unit", default="pgbouncer.service")
    args = parser.parse_args(argv)
    try:
        text = render(args.secret, aws_cli_fetcher(args.region))
        changed = write_if_changed(args.auth_file, text, args.owner)
    except AuthFileError as e:
        print(f"error: {e}; {args.auth_file} left as it was", file=sys.stderr)
        return 1
    roles = ", ".join(role for role, _ in args.secret)
    if not changed:
        print(f"{args.auth_file} is current ({roles})")
        return 0
    reloaded = reload_if_active(args.reload_unit)
    print(f"{args.auth_file} written ({roles}){'; reloaded ' + args.reload_unit if reloaded else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
