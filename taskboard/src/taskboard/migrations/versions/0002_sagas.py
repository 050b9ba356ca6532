"""corestone's saga log (durable sagas: workspace creation runs as one).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corestone_sagas",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'compensating', 'completed', 'compensated', 'failed')",
            name=op.f("ck_corestone_sagas_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corestone_sagas")),
    )
    op.create_index(
        "ix_corestone_sagas_status_locked_until",
        "corestone_sagas",
        ["status", "locked_until"],
    )


def downgrade() -> None:
    op.drop_index("ix_corestone_sagas_status_locked_until", table_name="corestone_sagas")
    op.drop_table("corestone_sagas")
