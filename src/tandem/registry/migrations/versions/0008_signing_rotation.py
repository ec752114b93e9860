"""Signing-key rotation with overlap: a published next key and when it starts signing (issue 17).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("activates", TZ, nullable=True))
        batch.add_column(sa.Column("activated", TZ, nullable=True))
        batch.add_column(sa.Column("endorsement", sa.JSON(), nullable=True))
    # Every key stored before rotation with overlap signed from the moment it was made (current or since
    # rotated away from): none of them is a "next" key.
    op.execute(sa.text("UPDATE signing_keys SET activated = created"))


def downgrade() -> None:
    # A key still waiting to sign would become an ordinary old key: drop it rather than let it look used.
    op.execute(sa.text("DELETE FROM signing_keys WHERE activated IS NULL AND current = :no").bindparams(no=False))
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("endorsement")
        batch.drop_column("activated")
        batch.drop_column("activates")
