"""Model scopes on device keys: a device-scope API key may name the models (and the apps) it serves,
and the devices that register with it inherit them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-02-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("api_keys", "devices"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("models", sa.JSON(), nullable=True))
            batch.add_column(sa.Column("apps", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("api_keys", "devices"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("apps")
            batch.drop_column("models")
