"""A real PostgreSQL for the tests: each test gets a fresh schema of its own, dropped after.

The server is ``ORCHESTRA_TEST_POSTGRES`` (default ``postgresql://127.0.0.1:5432/test``, trust
authentication). Without psycopg or without a server answering there, the tests that need it
skip with one line saying so.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from urllib.parse import quote

import pytest

DEFAULT_URL = "postgresql://127.0.0.1:5432/test"


def base_url() -> str:
    return os.environ.get("ORCHESTRA_TEST_POSTGRES", DEFAULT_URL)


@cache
def _unavailable() -> str | None:
    """Why PostgreSQL cannot be used here (None: it can). Asked once per test run."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        psycopg.connect(base_url(), connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        return f"no PostgreSQL at {base_url()} ({str(exc).strip().splitlines()[0]})"
    return None


def summary_line() -> str | None:
    """One line for the end of a run whose PostgreSQL tests were skipped (None: they ran or
    none was asked for)."""
    if _unavailable.cache_info().currsize == 0:
        return None
    why = _unavailable()
    return None if why is None else f"PostgreSQL tests skipped: {why}"


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL cannot be used."""
    why = _unavailable()
    if why is not None:
        pytest.skip(f"PostgreSQL tests skipped: {why}")


def with_schema(url: str, schema: str) -> str:
    """``url`` with its search_path set to ``schema`` (the backend's tables go there)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A store URL whose tables live in a new, empty schema; the schema is dropped after."""
    require_postgres()
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base_url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_schema(base_url(), schema)
    finally:
        with psycopg.connect(base_url(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def opened_backend(url: str):  # -> PostgresBackend (imported here: psycopg may be missing)
    """A PostgreSQL store backend on ``url``, opened (migrated); the caller closes it."""
    from orchestra.actors.store_postgres import PostgresBackend

    backend = PostgresBackend(url)
    backend.open()
    return backend
