"""Health over distinct devices: one row per device and release (its latest report), the release's
figures kept over devices, and the gate's threshold in devices (``min_reports`` becomes
``min_devices``).

The old ``release_health`` rows summed reports without knowing which device sent them; they cannot
be turned into per-device figures, so every release's health starts afresh with this revision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _fks(table: str) -> list[sa.ForeignKeyConstraint]:
    return [sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=f"fk_{table}_model_id_models",
                                    ondelete="CASCADE"),
            sa.ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.number"],
                                    name=f"fk_{table}_version")]


def _release_health(counts: tuple[str, ...]) -> None:
    op.create_table(
        "release_health",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in counts),
        *(sa.Column(c, sa.Float(), nullable=False) for c in ("p50_ms_sum", "p99_ms_sum", "p99_ms_max")),
        sa.Column("updated", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_health"),
        *_fks("release_health"),
        sa.UniqueConstraint("model_id", "version", "channel", name="uq_release_health_model_version_channel"),
    )


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.alter_column("min_reports", new_column_name="min_devices", existing_type=sa.Integer(),
                           existing_nullable=False)
    op.drop_table("release_health")
    _release_health(("reports", "devices", "failed_devices", "load_failures", "inference_errors", "inferences",
                     "latency_devices"))
    op.create_table(
        "device_health",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in ("load_failures", "inference_errors", "inferences")),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.Column("updated", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_device_health"),
        *_fks("device_health"),
        sa.UniqueConstraint("model_id", "version", "channel", "device_id", name="uq_device_health_release_device"),
    )


def downgrade() -> None:
    op.drop_table("device_health")
    op.drop_table("release_health")
    _release_health(("reports", "failed_reports", "load_failures", "inference_errors", "inferences",
                     "latency_reports"))
    with op.batch_alter_table("releases") as batch:
        batch.alter_column("min_devices", new_column_name="min_reports", existing_type=sa.Integer(),
                           existing_nullable=False)
