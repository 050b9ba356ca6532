"""Tasks get soft delete and a keyset index for the default sort; corestone's audit log.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deleted_by", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_tasks_workspace_id_created_at_id", ["workspace_id", "created_at", "id"]
        )
    op.create_table(
        "corestone_audit_log",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entity", sa.String(length=100), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("workspace_id", ID, nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_audit_log")),
    )
    op.create_index(
        "ix_corestone_audit_log_workspace_id_id", "corestone_audit_log", ["workspace_id", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_corestone_audit_log_workspace_id_id", table_name="corestone_audit_log")
    op.drop_table("corestone_audit_log")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_workspace_id_created_at_id")
        batch_op.drop_column("deleted_by")
        batch_op.drop_column("deleted_at")
