"""Alembic environment: runs on the connection corestone hands over (see corestone.db.upgrade)."""

from __future__ import annotations

from alembic import context

from corestone.db import Base
from taskboard.domain import models  # noqa: F401 - registers the tables on Base.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run taskboard migrations with `taskboard db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
