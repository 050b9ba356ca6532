"""Memberships get their own id, so they go through a repository like every other row.

A repository needs a single-column key; the pair (workspace_id, user_id) stays unique.
PostgreSQL alters the table in place (``BIGSERIAL`` numbers the existing rows); SQLite
cannot change a primary key, so the table is rebuilt and its rows copied.

Revision ID: 0004
Revises: 0003
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UNIQUE = "uq_memberships_workspace_id_user_id"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_memberships", "memberships", type_="primary")
        op.execute("ALTER TABLE memberships ADD COLUMN id BIGSERIAL NOT NULL")
        op.create_primary_key("pk_memberships", "memberships", ["id"])
        op.create_unique_constraint(_UNIQUE, "memberships", ["workspace_id", "user_id"])
    else:
        _rebuild(with_id=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_UNIQUE, "memberships", type_="unique")
        op.drop_constraint("pk_memberships", "memberships", type_="primary")
        op.drop_column("memberships", "id")
        op.create_primary_key("pk_memberships", "memberships", ["workspace_id", "user_id"])
    else:
        _rebuild(with_id=False)


def _rebuild(*, with_id: bool) -> None:
    """SQLite: the memberships table in its new shape, with the old table's rows."""
    op.drop_index("ix_memberships_user_id", table_name="memberships")
    op.rename_table("memberships", "_memberships_old")
    keys: list[Any] = (
        [
            sa.Column("id", ID, autoincrement=True, nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_memberships"),
            sa.UniqueConstraint("workspace_id", "user_id", name=_UNIQUE),
        ]
        if with_id
        else [sa.PrimaryKeyConstraint("workspace_id", "user_id", name="pk_memberships")]
    )
    op.create_table(
        "memberships",
        sa.Column("workspace_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.CheckConstraint("role IN ('owner', 'member')", name="ck_memberships_role"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_memberships_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_memberships_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        *keys,
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.execute(
        "INSERT INTO memberships (workspace_id, user_id, role) "
        "SELECT workspace_id, user_id, role FROM _memberships_old ORDER BY workspace_id, user_id"
    )
    op.drop_table("_memberships_old")
