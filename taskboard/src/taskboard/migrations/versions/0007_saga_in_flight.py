"""corestone's saga log names the external steps in flight (started, not yet recorded).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for existing rows: the log did not say, so recovery treats every external step
    # without a record as possibly cut off, as the code before this revision did.
    with op.batch_alter_table("corestone_sagas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("in_flight", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("corestone_sagas", schema=None) as batch_op:
        batch_op.drop_column("in_flight")
