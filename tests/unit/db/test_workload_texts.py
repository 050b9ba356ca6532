"""pg_stat_statements texts: only the normalised ones (values as $n) reach a report."""

from __future__ import annotations

import pytest

from corestone.db.workload import is_normalised


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM tasks WHERE id = $1",
        "  (SELECT a FROM t) UNION (SELECT b FROM u)",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "insert into t (a) values ($1)",
        "UPDATE t SET a = $1",
        "DELETE FROM t WHERE a = $1",
        "VALUES ($1)",
    ],
)
def test_plannable_statements_are_kept(query: str) -> None:
    """SELECT/INSERT/UPDATE/DELETE/WITH/VALUES: PostgreSQL replaced their values."""
    assert is_normalised(query)


@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT * FROM users WHERE email = 'ada@example.com') TO STDOUT",
        "CALL transfer('acct-4111', 100)",
        "DO $$ BEGIN PERFORM set_secret('s3cr3t'); END $$",
        "ALTER ROLE app PASSWORD 's3cr3t'",
        "CREATE TABLE t (a int DEFAULT 42)",
        "VACUUM t",
        "SELECTION",
    ],
)
def test_utility_statements_with_their_values_are_left_out(query: str) -> None:
    """Utility statements keep their literal values in the view's text (PostgreSQL < 16)."""
    assert not is_normalised(query)
