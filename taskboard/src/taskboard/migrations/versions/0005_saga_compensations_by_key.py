"""corestone's saga log records the compensations still to run by step key.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for existing rows: a saga compensating under the old log plans its remaining
    # compensations by key when it is next resumed (they are safe to repeat).
    with op.batch_alter_table("corestone_sagas", schema=None) as batch_op:
        batch_op.add_column(sa.Column("to_compensate", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("corestone_sagas", schema=None) as batch_op:
        batch_op.drop_column("to_compensate")
