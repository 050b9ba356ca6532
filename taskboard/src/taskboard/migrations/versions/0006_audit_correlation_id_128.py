"""The audit log's correlation id holds 128 characters, the longest X-Request-ID accepted.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("corestone_audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "correlation_id",
            existing_type=sa.String(length=64),
            type_=sa.String(length=128),
            existing_nullable=True,
        )


def downgrade() -> None:
    # Longer ids would not fit any more; cut them as the code before this revision did.
    op.execute(
        sa.text(
            "UPDATE corestone_audit_log SET correlation_id = substr(correlation_id, 1, 64)"
            " WHERE length(correlation_id) > 64"
        )
    )
    with op.batch_alter_table("corestone_audit_log", schema=None) as batch_op:
        batch_op.alter_column(
            "correlation_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=64),
            existing_nullable=True,
        )
