"""The throwaway PostgreSQL cluster for the tests: demo/pgcluster.py's (shared with `make bench` and
`make demo-fleet`), with missing server binaries turned into a skip that says why."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo import pgcluster as shared
from demo.pgcluster import DB_ROLE, MISSING_REASON, PgCluster, find_pg_bin, server_user

__all__ = ["DB_ROLE", "MISSING_REASON", "PgCluster", "find_pg_bin", "server_user", "throwaway_cluster"]


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and removed on the way out; the test skips without server binaries."""
    if find_pg_bin() is None:
        pytest.skip(MISSING_REASON)
    with shared.throwaway_cluster() as cluster:
        yield cluster
