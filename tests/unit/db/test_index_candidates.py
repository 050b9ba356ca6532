"""Statement reading and candidate indexes, without a database: order, partial, quoting."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

from corestone.db._catalog import Catalog, IndexInfo, TableInfo
from corestone.db._index_candidates import Candidate, candidates, drop_candidates, index_ddl
from corestone.db._predicates import table_uses

COLUMNS = frozenset({"id", "workspace_id", "status", "title", "created_at", "deleted_at", "done"})
QUOTE = postgresql.dialect().identifier_preparer.quote


def _catalog(*indexes: IndexInfo) -> Catalog:
    return Catalog("postgresql", {"tasks": TableInfo("tasks", 50_000, COLUMNS)}, indexes)


def _keys(
    statement: str, catalog: Catalog | None = None
) -> list[tuple[tuple[str, ...], str | None]]:
    catalog = catalog or _catalog()
    uses = table_uses(statement, "postgresql", {"tasks": COLUMNS})
    return [(c.names, c.predicate) for u in uses.values() for c in candidates(u, catalog)]


def test_equality_then_range_then_nothing_after_the_range() -> None:
    """Equality columns lead, one range follows; an ORDER BY after another range is left out."""
    found = _keys("SELECT * FROM tasks WHERE workspace_id = $1 AND created_at > $2 ORDER BY title")
    assert found[0] == (("workspace_id", "created_at"), None)


def test_an_order_by_follows_the_equalities() -> None:
    """WHERE a = ? ORDER BY b, c gives (a, b, c), and (a) as the narrower rival."""
    found = _keys("SELECT * FROM tasks WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC")
    assert found == [
        (("workspace_id", "created_at", "id"), None),
        (("workspace_id",), None),
    ]


def test_a_range_that_is_the_order_keeps_the_order() -> None:
    """WHERE a = ? AND b > ? ORDER BY b, c gives (a, b, c)."""
    found = _keys(
        "SELECT * FROM tasks WHERE workspace_id = $1 AND created_at > $2 ORDER BY created_at, id"
    )
    assert found[0] == (("workspace_id", "created_at", "id"), None)


def test_constant_tests_make_a_partial_index() -> None:
    """IS NULL and = TRUE are the WHERE of a partial index, not columns."""
    found = _keys(
        "SELECT * FROM tasks t WHERE t.status IN ($1, $2)"
        " AND t.deleted_at IS NULL AND t.done = true"
    )
    assert found == [(("status",), "deleted_at IS NULL AND done = TRUE")]


def test_mixed_directions_are_kept_in_the_index() -> None:
    """ORDER BY a DESC, b ASC needs a DESC column; one direction throughout does not."""
    uses = table_uses(
        "SELECT * FROM tasks ORDER BY created_at DESC, id ASC", "postgresql", {"tasks": COLUMNS}
    )
    [candidate, _] = candidates(uses["tasks"], _catalog())
    assert candidate.columns == (("created_at", True), ("id", False))
    assert index_ddl(candidate, QUOTE) == (
        "CREATE INDEX ix_tasks_created_at_id ON tasks (created_at DESC, id)"
    )


def test_an_existing_prefix_or_full_index_serves_the_candidate() -> None:
    """No candidate whose columns lead an existing index; a partial one only for its WHERE."""
    wide = IndexInfo("ix_wide", "tasks", ("workspace_id", "status", "title"))
    assert (
        _keys("SELECT * FROM tasks WHERE workspace_id = $1 AND status = $2", _catalog(wide)) == []
    )
    partial = IndexInfo("ix_p", "tasks", ("status",), predicate="(deleted_at IS NULL)")
    assert (
        _keys("SELECT * FROM tasks WHERE status = $1 AND deleted_at IS NULL", _catalog(partial))
        == []
    )
    assert _keys("SELECT * FROM tasks WHERE status = $1", _catalog(partial)) == [
        (("status",), None)
    ]


def test_filters_under_or_on_expressions_or_unknown_columns_are_left_out() -> None:
    """OR branches, lower(col), and a column the table does not have give no candidate."""
    assert _keys("SELECT * FROM tasks WHERE status = $1 OR title = $2") == []
    assert _keys("SELECT * FROM tasks WHERE lower(title) = $1") == []
    assert _keys("SELECT * FROM tasks WHERE nonexistent = $1") == []
    assert _keys("not sql (") == []


def test_update_and_delete_filters_are_read() -> None:
    """UPDATE and DELETE are read like a SELECT's WHERE."""
    assert _keys("UPDATE tasks SET title = $1 WHERE status = $2")[0] == (("status",), None)
    assert _keys("DELETE FROM tasks WHERE created_at < $1")[0] == (("created_at",), None)


@pytest.mark.parametrize(
    ("table", "column", "expected"),
    [
        ('Odd "T"', "we ird", 'CREATE INDEX "ix_Odd ""T""_we ird" ON "Odd ""T""" ("we ird")'),
        ("t", "select", 'CREATE INDEX ix_t_select ON t ("select")'),
    ],
)
def test_names_are_quoted(table: str, column: str, expected: str) -> None:
    """Every identifier goes through the dialect's quoting, reserved words included."""
    ddl = index_ddl(Candidate(table, ((column, False),)), QUOTE)
    assert ddl == expected


def test_a_long_name_is_cut_to_63_characters_with_a_hash() -> None:
    """PostgreSQL truncates names at 63: the advisor cuts them itself, distinctly."""
    a = Candidate("t" * 40, (("c" * 30, False),))
    b = Candidate("t" * 40, (("c" * 29 + "d", False),))
    assert len(a.name) == 63
    assert a.name != b.name


def test_drop_candidates_spare_keys_and_the_first_of_equals() -> None:
    """Duplicates lose the later name; prefixes go; keys and unique indexes stay."""
    catalog = Catalog(
        "postgresql",
        {"tasks": TableInfo("tasks", 10, COLUMNS)},
        (
            IndexInfo("tasks_pkey", "tasks", ("id",), unique=True, primary=True, scans=0),
            IndexInfo("ux_id", "tasks", ("id",), unique=True, scans=0),
            IndexInfo("ix_a", "tasks", ("status",), scans=5),
            IndexInfo("ix_b", "tasks", ("status",), scans=5),
            IndexInfo("ix_ws", "tasks", ("workspace_id",), scans=5),
            IndexInfo("ix_ws_st", "tasks", ("workspace_id", "status"), scans=5),
            IndexInfo(
                "ix_part", "tasks", ("workspace_id",), predicate="deleted_at IS NULL", scans=9
            ),
            IndexInfo("ix_idle", "tasks", ("title",), scans=0),
        ),
    )
    found = {d.index: (d.reason, d.covered_by) for d in drop_candidates(catalog)}
    assert found == {
        "ux_id": ("duplicate", "tasks_pkey"),
        "ix_b": ("duplicate", "ix_a"),
        "ix_ws": ("prefix", "ix_ws_st"),
        "ix_idle": ("unused", None),
    }
