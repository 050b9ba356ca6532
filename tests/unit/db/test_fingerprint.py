"""Fingerprints: statements that differ only in values share one; other shapes never do."""

from __future__ import annotations

import pytest

from corestone.db._fingerprint import Fingerprinter, fingerprint_of, normalise_text

PG = "postgresql"
LITE = "sqlite"

# (dialect, statements that must share one fingerprint)
SAME = [
    (
        PG,
        [
            "SELECT t.id FROM t WHERE t.id = $1::UUID",
            "select t.id\n  from t\n where t.id = 'b3c1f1a2-0000-0000-0000-000000000000'",
            "SELECT T.ID FROM T WHERE T.ID = $7",
        ],
    ),
    (
        PG,
        [
            "SELECT a FROM t WHERE a IN ($1::INTEGER)",
            "SELECT a FROM t WHERE a IN ($1::INTEGER, $2::INTEGER, $3::INTEGER)",
            "SELECT a FROM t WHERE a IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, -13)",
        ],
    ),
    (
        PG,
        [
            "INSERT INTO t (a, b) VALUES ($1, $2)",
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)",
            "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
        ],
    ),
    (
        PG,  # SQLAlchemy's insertmanyvalues with RETURNING in order
        [
            "INSERT INTO t (a) SELECT p0::INTEGER FROM (VALUES ($1, 0)) AS imp_sen(p0, sen_counter)"
            " ORDER BY sen_counter RETURNING t.id",
            "INSERT INTO t (a) SELECT p0::INTEGER FROM (VALUES ($1, 0), ($2, 1), ($3, 2)) AS"
            " imp_sen(p0, sen_counter) ORDER BY sen_counter RETURNING t.id",
        ],
    ),
    (
        PG,
        [
            "SELECT a FROM t WHERE (a, b) IN (($1, $2))",
            "SELECT a FROM t WHERE (a, b) IN (($1, $2), ($3, $4), ($5, $6))",
        ],
    ),
    (PG, ["SELECT a FROM t LIMIT 10 OFFSET 20", "SELECT a FROM t LIMIT $1 OFFSET $2"]),
    (
        LITE,
        [
            "SELECT * FROM tasks WHERE workspace_id = ? AND status IN (?, ?) LIMIT ?",
            "SELECT * FROM tasks WHERE workspace_id = 7 AND status IN ('open') LIMIT 20",
            "select *   from TASKS where WORKSPACE_ID = ? and STATUS in (?, ?, ?, ?) limit ?",
        ],
    ),
    (LITE, ["INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (?), (?), (?)"]),
    (LITE, ["UPDATE t SET v = v + 1 WHERE id = ?", "UPDATE t SET v = v + 5 WHERE id = 9"]),
]

# (dialect, statements that must all have different fingerprints)
DIFFERENT = [
    (
        PG,
        [
            "SELECT a FROM t WHERE a = $1",
            "SELECT a FROM t WHERE a > $1",
            "SELECT a FROM t WHERE b = $1",
            "SELECT b FROM t WHERE a = $1",
            "SELECT a FROM u WHERE a = $1",
            "SELECT a FROM t WHERE a IN ($1)",
            "SELECT a FROM t WHERE a = $1 AND b = $2",
            "SELECT a FROM t WHERE a = $1 OR b = $2",
            "SELECT a FROM t WHERE a = $1 LIMIT $2",
            "SELECT a FROM t WHERE a = $1 ORDER BY a",
            "SELECT a FROM t WHERE a = $1 ORDER BY a DESC",
            "SELECT a FROM t WHERE a IS NULL",
            "SELECT a FROM t WHERE a IS NOT NULL",
            "SELECT a FROM t WHERE a IN (b, $1)",
            "SELECT a FROM t WHERE a IN (SELECT b FROM u)",
            'SELECT a FROM "T" WHERE a = $1',
            "SELECT count(*) FROM t WHERE a = $1",
            "DELETE FROM t WHERE a = $1",
            "UPDATE t SET a = $1",
            "UPDATE t SET b = $1",
            "INSERT INTO t (a) VALUES ($1)",
            "INSERT INTO t (a, b) VALUES ($1, $2)",
        ],
    ),
    # An output column's position is shape: these sort or group by different columns.
    (PG, ["SELECT a, b FROM t ORDER BY 1", "SELECT a, b FROM t ORDER BY 2"]),
    (PG, ["SELECT a, b, count(*) FROM t GROUP BY 1", "SELECT a, b, count(*) FROM t GROUP BY 2"]),
    (LITE, ["SELECT a, b FROM t ORDER BY 1 DESC", "SELECT a, b FROM t ORDER BY 2 DESC"]),
    (
        LITE,
        [
            "SELECT a FROM t WHERE a = ?",
            "SELECT a FROM t WHERE a = ? AND deleted_at IS NULL",
            "SELECT a FROM t JOIN u ON u.id = t.u_id WHERE a = ?",
            "SELECT a FROM t LEFT JOIN u ON u.id = t.u_id WHERE a = ?",
            "SELECT a FROM t WHERE a LIKE ?",
            "SELECT a FROM t GROUP BY a",
            "INSERT INTO t (a) VALUES (?)",
            "INSERT INTO u (a) VALUES (?)",
        ],
    ),
]


@pytest.mark.parametrize(("dialect", "statements"), SAME)
def test_statements_differing_only_in_values_share_a_fingerprint(
    dialect: str, statements: list[str]
) -> None:
    """Literals, parameters, IN-lists and VALUES lists of any length fold into one shape."""
    prints = {fingerprint_of(s, dialect) for s in statements}

    assert len({p.id for p in prints}) == 1, [p.text for p in prints]
    assert all(p.parsed for p in prints)


@pytest.mark.parametrize(("dialect", "statements"), DIFFERENT)
def test_different_shapes_never_share_a_fingerprint(dialect: str, statements: list[str]) -> None:
    """Any change of table, column, operator, clause or order is a different fingerprint."""
    ids = [fingerprint_of(s, dialect).id for s in statements]

    assert len(set(ids)) == len(ids)


def test_the_text_shows_placeholders_and_no_value() -> None:
    """The normalised text keeps the shape and hides every value behind a ?."""
    found = fingerprint_of(
        "SELECT id FROM users WHERE email = 'ada@example.com' AND id IN (1, 2, 3)", PG
    )

    assert found.text == "SELECT id FROM users WHERE email = ? AND id IN (?)"
    assert found.operation == "select"
    assert found.tables == ("users",)


def test_a_parenthesised_parameter_keeps_its_parentheses() -> None:
    """= ANY($1) reads = ANY(?), not = ANY ?."""
    found = fingerprint_of("SELECT a FROM t WHERE a = ANY($1) AND b = ($2)", PG)

    assert found.text == "SELECT a FROM t WHERE a = ANY(?) AND b = (?)"


def test_transaction_control_is_marked_and_not_parsed() -> None:
    """BEGIN, COMMIT, SAVEPOINT… are marked control (not queries of a unit of work)."""
    for statement in ("BEGIN IMMEDIATE", "COMMIT", "SAVEPOINT sa_1", "RELEASE SAVEPOINT sa_1"):
        assert fingerprint_of(statement, LITE).control
    assert not fingerprint_of("SELECT 1", LITE).control


def test_null_and_booleans_are_shape_not_values() -> None:
    """IS NULL and = TRUE stay in the text: a partial index can be built on them."""
    found = fingerprint_of("SELECT a FROM t WHERE deleted_at IS NULL AND active = TRUE", PG)

    assert found.text == "SELECT a FROM t WHERE deleted_at IS NULL AND active = TRUE"


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT 1", "select"),
        ("SELECT a FROM t UNION SELECT a FROM u", "select"),
        ("INSERT INTO t (a) VALUES ($1)", "insert"),
        ("UPDATE t SET a = $1", "update"),
        ("DELETE FROM t", "delete"),
        ("WITH x AS (INSERT INTO t (a) VALUES ($1) RETURNING a) INSERT INTO u SELECT a FROM x",
         "insert"),
        ("WITH ins AS (INSERT INTO t (a) VALUES ($1) RETURNING a) SELECT a FROM ins", "insert"),
        ("WITH gone AS (DELETE FROM t RETURNING a) SELECT count(*) FROM gone", "delete"),
        ("WITH x AS (SELECT a FROM t) SELECT a FROM x", "select"),
        ("BEGIN", "other"),
        ("CREATE TABLE t (a INT)", "other"),
    ],
)  # fmt: skip
def test_the_operation_is_one_of_five(statement: str, operation: str) -> None:
    """The metrics label comes from the statement's root: select/insert/update/delete/other."""
    assert fingerprint_of(statement, PG).operation == operation


def test_the_same_text_on_two_databases_is_two_fingerprints() -> None:
    """The dialect is part of the fingerprint: two databases are two workloads."""
    assert fingerprint_of("SELECT a FROM t", PG).id != fingerprint_of("SELECT a FROM t", LITE).id


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT SA_SAVEPOINT_1"),
        ("PRAGMA busy_timeout=5000", "PRAGMA BUSY_TIMEOUT=?"),
        ("this is (not sql 'at all', 42, $3", "THIS IS (NOT SQL ?, ?, ?"),
        ("FROBNICATE  x\n IN (1, 2,3)  ;", "FROBNICATE X IN (?)"),
        ('SELEKT "MixedCase" WHERE x = 1', 'SELEKT "MixedCase" WHERE X = ?'),
    ],
)
def test_what_the_parser_cannot_read_gets_the_documented_fallback(
    statement: str, expected: str
) -> None:
    """Unparsable SQL is normalised by the fallback rules, never an exception."""
    found = fingerprint_of(statement, PG)

    assert found.text == expected == normalise_text(statement)
    assert not found.parsed
    assert found.operation == "other"


@pytest.mark.parametrize(
    "statement", ["", "   ", ";", "(((", "'unterminated", "SELECT (", "\x00", "SELECT " * 2000]
)
def test_hostile_text_never_raises(statement: str) -> None:
    """Empty, broken, binary or huge statements still get a fingerprint."""
    for dialect in (PG, LITE, "mysql"):
        assert fingerprint_of(statement, dialect).id


def test_the_parser_runs_once_per_distinct_statement_text() -> None:
    """The fingerprinter's cache answers a repeated statement without parsing it again."""
    fingerprinter = Fingerprinter(PG, cache_size=8)
    statement = "SELECT a FROM t WHERE a = $1"

    first = fingerprinter(statement)
    for _ in range(100):
        assert fingerprinter(statement) is first

    hits, misses, entries = fingerprinter.cache_info()
    assert (hits, misses, entries) == (100, 1, 1)


def test_the_fingerprint_cache_is_bounded() -> None:
    """Distinct statement texts beyond the cache size evict the oldest."""
    fingerprinter = Fingerprinter(LITE, cache_size=16)
    for n in range(200):
        fingerprinter(f"SELECT a{n} FROM t")

    assert fingerprinter.cache_info()[2] == 16


SECRET = "s3cr3t-VALUE-4111"


@pytest.mark.parametrize(
    "literal",
    [f"E'{SECRET}'", f"$${SECRET}$$", f"$tag${SECRET}$tag$", f"U&'{SECRET}'", f"N'{SECRET}'",
     "X'deadbeef4111'", "B'1010111'"],
)  # fmt: skip
def test_every_kind_of_postgresql_string_literal_is_a_placeholder(literal: str) -> None:
    """E'', dollar-quoted, U&'', N'', X'' and B'' strings are values too: none reaches the text."""
    found = fingerprint_of(f"SELECT id FROM users WHERE token = {literal}", PG)

    assert found.parsed
    assert found.text == "SELECT id FROM users WHERE token = ?"
    assert fingerprint_of("SELECT id FROM users WHERE token = $1", PG).id == found.id


def test_a_window_order_by_number_is_still_a_value() -> None:
    """Only a query's own ORDER BY/GROUP BY numbers are positions; in a window, a constant."""
    found = fingerprint_of("SELECT row_number() OVER (ORDER BY 1) FROM t ORDER BY 1 LIMIT 5", PG)

    assert found.text == "SELECT ROW_NUMBER() OVER (ORDER BY ?) FROM t ORDER BY 1 LIMIT ?"


def test_a_statement_the_parser_gives_up_on_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sqlglot's 'unsupported syntax' warning quotes the statement (a password here): dropped."""
    with caplog.at_level("DEBUG"):
        found = fingerprint_of(f"ALTER ROLE bob PASSWORD '{SECRET}'", PG)

    assert SECRET not in found.text
    assert SECRET not in caplog.text


def test_long_lists_of_every_length_are_parsed_once() -> None:
    """Expanding INs and batched INSERTs of hundreds of items, each length a new text: one
    parse and one short cache entry for all (a 30,000-item IN took sqlglot over a second,
    on the event loop, for each new length), and the fingerprint of the short form."""
    fingerprinter = Fingerprinter(PG, cache_size=64)
    ins = [
        "SELECT * FROM t WHERE id IN ("
        + ", ".join(f"${i}::INTEGER" for i in range(1, n + 1))
        + ") AND kind IN ($0, 7)"
        for n in range(300, 400)
    ]
    batches = [
        "INSERT INTO t (a, b) VALUES "
        + ", ".join(f"(${2 * i + 1}::VARCHAR(10), ${2 * i + 2}::TIMESTAMP WITH TIME ZONE)"
                    for i in range(n))
        + " RETURNING t.id"
        for n in range(100, 200)
    ]  # fmt: skip
    first_in, first_batch = fingerprinter(ins[0]), fingerprinter(batches[0])
    assert all(fingerprinter(s) == first_in for s in ins)
    assert all(fingerprinter(s) == first_batch for s in batches)

    assert fingerprinter.cache_info()[1:] == (2, 2)
    assert first_in == fingerprint_of(ins[-1], PG)
    assert first_in.text == "SELECT * FROM t WHERE id IN (?) AND kind IN (?)"
    assert first_batch == fingerprint_of(batches[-1], PG)
    assert first_batch.text == "INSERT INTO t (a, b) VALUES (?, ?) RETURNING t.id"


def test_a_long_function_call_keeps_its_arguments() -> None:
    """Only lists after IN and VALUES are cut: a long statement's coalesce($1, $2) stays."""
    statement = "SELECT coalesce($1, $2) FROM t WHERE " + " AND ".join(
        f"c{i} = ${i + 3}" for i in range(200)
    )
    assert Fingerprinter(PG)(statement) == fingerprint_of(statement, PG)
    assert "COALESCE(?, ?)" in fingerprint_of(statement, PG).text


def test_a_huge_statement_is_not_kept_in_the_cache() -> None:
    """Documents spliced into the SQL text (100 kB each, all different): fingerprinted, one
    shape, and none of them held by the cache (4,096 of them would be gigabytes)."""
    fingerprinter = Fingerprinter(PG, cache_size=64)
    found = {
        fingerprinter(f"INSERT INTO docs (id, body) VALUES ({n}, '{str(n) * 100_000}')")
        for n in range(1, 10)
    }

    assert [f.text for f in found] == ["INSERT INTO docs (id, body) VALUES (?, ?)"]
    assert fingerprinter.cache_info()[2] == 0


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (f"ALTER ROLE bob PASSWORD $${SECRET}$$", "ALTER ROLE BOB PASSWORD ?"),
        (f"ALTER ROLE bob PASSWORD $pw${SECRET}$pw$", "ALTER ROLE BOB PASSWORD ?"),
        (f"ALTER ROLE bob PASSWORD E'{SECRET}\\'s'", "ALTER ROLE BOB PASSWORD ?"),
        (f"DO $$BEGIN\n PERFORM set_key({SECRET}); END$$", "DO ?"),
        (f"SET app.key TO {SECRET}", "SET APP.KEY TO ?"),
        (f'SET LOCAL app.key = "{SECRET}"', "SET LOCAL APP.KEY = ?"),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION ISOLATION LEVEL"
                                                         " SERIALIZABLE"),
    ],
)  # fmt: skip
def test_the_fallback_hides_dollar_quoted_escaped_and_set_values(
    statement: str, expected: str
) -> None:
    """What the parser gives up on still shows no value: $$…$$ and $tag$…$tag$ bodies,
    E'' strings with escaped quotes, and whatever a SET assigns, bare word or quoted."""
    found = fingerprint_of(statement, PG)

    assert not found.parsed
    assert found.text == expected
