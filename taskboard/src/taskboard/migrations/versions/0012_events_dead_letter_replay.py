"""corestone's events: dead letters can be marked for replay by another process.

``corestone events dead-letters replay`` sets ``replay_requested_at``; the group's
running consumers replay the marked rows and clear the mark.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("corestone_events_dead_letters") as batch:
        batch.add_column(
            sa.Column("replay_requested_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("corestone_events_dead_letters") as batch:
        batch.drop_column("replay_requested_at")
