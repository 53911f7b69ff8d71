"""The one error of dbctl.postgres: a local cluster could not be found, created, started or stopped."""

from __future__ import annotations

from dbctl.core.errors import DbctlError


class ClusterError(DbctlError, RuntimeError):
    """A local cluster could not be created, started or stopped. The message says why and what to do."""
