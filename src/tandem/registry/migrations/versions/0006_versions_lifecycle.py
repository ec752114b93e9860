"""Version lifecycle: archived versions, deleted versions, and who pushed what from which commit (issue 17).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # models.last_version: the highest number ever taken, so that deleting the newest version does not
    # hand its number to the next push. It starts at each model's highest stored version.
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("last_version", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE models SET last_version = COALESCE("
               "(SELECT MAX(versions.number) FROM versions WHERE versions.model_id = models.id), 0)")
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("archived", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pushed_by", sa.String(200), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode: batch mode would copy and drop
    # ``versions`` and ``models``, which the other tables' foreign keys refer to, and SQLite refuses that.
    # Versions deleted by this revision's Tandem leave their numbers free again below this revision.
    op.drop_column("versions", "pushed_by")
    op.drop_column("versions", "archived")
    op.drop_column("models", "last_version")
