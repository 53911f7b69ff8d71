#!/usr/bin/env python3
"""PgBouncer host helper: the auth_file from the login roles' SCRAM verifiers, and the client TLS key and
certificate, from Secrets Manager.

This file is not imported by the Pulumi program: `components/pgbouncer_userdata.py` embeds it verbatim in
the user data, and a systemd service runs it on the PgBouncer host (Amazon Linux 2023: system Python 3.9,
stdlib only, the preinstalled AWS CLI v2 with the instance role's credentials) at boot and on a timer.

Rotation (dbctl/core/rotation.py, docs/operations.md): a pooled role logs in as one of two users, `<role>_a`
and `<role>_b`, and each version of its secret names one (`username`). The auth file holds the users of the
secret's AWSPREVIOUS, AWSCURRENT and AWSPENDING versions (the pending one wins over the previous one for the
same user), so a user a rotation is preparing is known to PgBouncer before any client gets it, and clients
of the user it switched away from keep logging in. A version that does not exist is skipped; AWSCURRENT
must. Only each version's `username` and `scram_verifier` keys are used; the plaintext `password` key is
never read, printed or written. A value that is not a SCRAM-SHA-256 verifier is refused (the old file
stays). The file is written atomically, mode 0600, owned by PgBouncer's service user, and PgBouncer is
reloaded only when it changed. Nothing secret reaches stdout/stderr (and so the journal or the cloud-init
log): only role names and ARNs.

With `--tls-secret`, the same run writes PgBouncer's client TLS key and certificate from that secret's
`private_key_pem` / `certificate_pem` keys (components/pgbouncer_tls.py) to tmpfs, mode 0600, owned by the
service user, refusing anything that is not one PEM private key and PEM certificates (the old files stay).
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
USERNAME_KEY = "username"  # dbctl.names.SECRET_USERNAME_KEY
# Secrets Manager's staging labels, in the order their users are merged (a later one wins).
STAGES = ("AWSPREVIOUS", "AWSCURRENT", "AWSPENDING")
USER_SUFFIXES = ("_a", "_b")  # dbctl.names.ALTERNATE_SUFFIXES
_VERIFIER = re.compile(
    r"SCRAM-SHA-256\$[1-9][0-9]*:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}="
)
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
TLS_KEY_FIELD = "private_key_pem"  # components.pgbouncer_tls.SECRET_KEY_FIELD
TLS_CERT_FIELD = "certificate_pem"  # components.pgbouncer_tls.SECRET_CERT_FIELD
_B64_LINES = r"(?:[A-Za-z0-9+/=]{1,76}\n)+"
_PEM_KEY = re.compile(rf"-----BEGIN (EC |)PRIVATE KEY-----\n{_B64_LINES}-----END \1PRIVATE KEY-----\n?")
_PEM_CERTS = re.compile(rf"(?:-----BEGIN CERTIFICATE-----\n{_B64_LINES}-----END CERTIFICATE-----\n?)+")

# (secret ARN, staging label) -> SecretString, or None when the secret has no version with that label.
SecretFetcher = Callable[[str, str], "str | None"]


class AuthFileError(RuntimeError):
    """The auth file could not be built; the message names the role or secret and never holds a secret."""


def aws_cli_fetcher(region: str) -> SecretFetcher:
    """SecretString of a secret ARN's version (by staging label) via the AWS CLI (instance role credentials
    from IMDSv2); None when no version has that label."""

    def fetch(arn: str, stage: str) -> str | None:
        cmd = ["aws", "secretsmanager", "get-secret-value", "--region", region, "--secret-id", arn]
        cmd += ["--query", "SecretString", "--output", "text", "--version-stage", stage]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if stage != "AWSCURRENT" and "ResourceNotFoundException" in done.stderr:
                return None  # no rotation under way (AWSPENDING) or none yet (AWSPREVIOUS)
            # The CLI's error text names the secret and the reason (AccessDenied, ...), never its value.
            raise AuthFileError(f"could not read secret {arn} ({stage}): {done.stderr.strip()}")
        return done.stdout

    return fetch


def _user(role: str, username: object, where: str) -> str:
    """The login user a version names: <role>_a/_b; the role itself (the layout before rotation) or no
    username means <role>_a, as dbctl.credentials.login_user says."""
    if username is None or username == role:
        return role + USER_SUFFIXES[0]
    if isinstance(username, str) and username in {role + suffix for suffix in USER_SUFFIXES}:
        return username
    raise AuthFileError(f"{where} names user {username!r}, not {role}_a or {role}_b")


def render(secrets: Sequence[tuple[str, str]], fetch: SecretFetcher) -> str:
    """The auth_file text: one `"user" "SCRAM-SHA-256$..."` line per user of each (role, secret ARN)'s
    previous, current and pending versions."""
    lines = []
    for role, arn in secrets:
        users: dict[str, str] = {}
        for stage in STAGES:
            text = fetch(arn, stage)
            if text is None:
                if stage == "AWSCURRENT":
                    raise AuthFileError(f"secret {arn} (role {role}) has no AWSCURRENT version")
                continue
            where = f"secret {arn} (role {role}, {stage})"
            try:
                document = json.loads(text)
            except json.JSONDecodeError:
                raise AuthFileError(f"{where} is not a JSON object") from None
            if not isinstance(document, dict):
                raise AuthFileError(f"{where} is not a JSON object")
            verifier = document.get(VERIFIER_KEY)
            if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
                raise AuthFileError(
                    f"{where} has no SCRAM-SHA-256 verifier under key {VERIFIER_KEY!r}; "
                    "fix: store the verifier (dbctl.scram.scram_verifier), never a plaintext password"
                )
            users[_user(role, document.get(USERNAME_KEY), where)] = verifier
        lines += [f'"{user}" "{users[user]}"\n' for user in sorted(users)]
    return "".join(lines)


def render_tls(arn: str, fetch: SecretFetcher) -> tuple[str, str]:
    """(private key PEM, certificate PEM) from the client TLS secret; never echoes either."""
    try:
        document = json.loads(fetch(arn, "AWSCURRENT") or "null")
    except json.JSONDecodeError:
        raise AuthFileError(f"TLS secret {arn} is not a JSON object") from None
    if not isinstance(document, dict):
        raise AuthFileError(f"TLS secret {arn} is not a JSON object")
    key, cert = document.get(TLS_KEY_FIELD), document.get(TLS_CERT_FIELD)
    if not isinstance(key, str) or not _PEM_KEY.fullmatch(key):
        raise AuthFileError(f"TLS secret {arn} has no PEM private key under {TLS_KEY_FIELD!r}")
    if not isinstance(cert, str) or not _PEM_CERTS.fullmatch(cert):
        raise AuthFileError(f"TLS secret {arn} has no PEM certificate under {TLS_CERT_FIELD!r}")
    return key if key.endswith("\n") else key + "\n", cert if cert.endswith("\n") else cert + "\n"


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
    parser.add_argument(
        "--reload-unit",
        action="append",
        help="a unit to reload on a change (repeat for each PgBouncer process; default pgbouncer.service)",
    )
    parser.add_argument("--tls-secret", metavar="ARN", help="client TLS key and certificate")
    parser.add_argument("--tls-key-file")
    parser.add_argument("--tls-cert-file")
    args = parser.parse_args(argv)
    tls_args = (args.tls_secret, args.tls_key_file, args.tls_cert_file)
    if any(tls_args) and not all(tls_args):
        parser.error("--tls-secret, --tls-key-file and --tls-cert-file go together")
    fetch = aws_cli_fetcher(args.region)
    try:
        text = render(args.secret, fetch)
        tls = render_tls(args.tls_secret, fetch) if args.tls_secret else None
    except AuthFileError as e:
        print(f"error: {e}; {args.auth_file} left as it was", file=sys.stderr)
        return 1
    changed = [args.auth_file] if write_if_changed(args.auth_file, text, args.owner) else []
    if tls is not None:
        for path, content in zip((args.tls_key_file, args.tls_cert_file), tls):  # noqa: B905 (Python 3.9)
            if write_if_changed(path, content, args.owner):
                changed.append(path)
    roles = ", ".join(role for role, _ in args.secret)
    if not changed:
        print(f"{args.auth_file} is current ({roles}){'; TLS files current' if tls else ''}")
        return 0
    reloaded = [unit for unit in args.reload_unit or ["pgbouncer.service"] if reload_if_active(unit)]
    print(f"{', '.join(changed)} written ({roles}){'; reloaded ' + ', '.join(reloaded) if reloaded else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
