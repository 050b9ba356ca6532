"""The events outbox read as a log per workspace: an index on (workspace_id, position).

A live stream resuming from ``Last-Event-ID`` reads one workspace's sent events after a
position; without this index that read scans every retained row of every workspace.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_corestone_events_outbox_workspace_position",
        "corestone_events_outbox",
        ["workspace_id", "position"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_corestone_events_outbox_workspace_position", table_name="corestone_events_outbox"
    )
