"""An operator role on bearer tokens: ``api_tokens.role``, 'user' (default) or 'operator'.

An operator token may read the operations dashboard and its data (``/ops``,
``/api/ops/{dashboard,breakers,cache,queries}``) without owning a workspace; it grants
nothing inside any workspace. Existing tokens become 'user' tokens.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="user")
        )
        batch.create_check_constraint(op.f("ck_api_tokens_role"), "role IN ('user', 'operator')")


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint(op.f("ck_api_tokens_role"), type_="check")
        batch.drop_column("role")
