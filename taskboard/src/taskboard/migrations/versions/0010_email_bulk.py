"""corestone's email outbox: the bulk send a message belongs to, counted by status.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("corestone_email_outbox") as batch:
        batch.add_column(sa.Column("bulk_id", sa.String(length=36), nullable=True))
    op.create_index(
        "ix_corestone_email_outbox_bulk_id_status",
        "corestone_email_outbox",
        ["bulk_id", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_corestone_email_outbox_bulk_id_status", table_name="corestone_email_outbox")
    with op.batch_alter_table("corestone_email_outbox") as batch:
        batch.drop_column("bulk_id")
