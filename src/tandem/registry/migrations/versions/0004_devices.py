"""Registered devices: a server-assigned id and a per-device credential (stored hashed) for each
device that enrolled with the fleet's device key (``POST /v1/devices``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("enrolled_by", sa.String(32), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.Column("revoked", TZ, nullable=True),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
    )


def downgrade() -> None:
    op.drop_table("devices")
