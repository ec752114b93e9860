"""Over-the-air delivery: releases and their rules, pins, health counts, signing keys, data keys, and
the encrypted objects (files and delta patches) made for devices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _model_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=f"fk_{table}_model_id_models", ondelete="CASCADE")


def _version_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.number"],
                                   name=f"fk_{table}_version")


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("min_app_version", sa.String(64), nullable=True),
        sa.Column("max_app_version", sa.String(64), nullable=True),
        sa.Column("platforms", sa.JSON(), nullable=False),
        sa.Column("min_os_version", sa.String(64), nullable=True),
        sa.Column("min_ram_mb", sa.Integer(), nullable=True),
        sa.Column("max_failure_rate", sa.Float(), nullable=True),
        sa.Column("min_reports", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("note", sa.String(400), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.Column("updated", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_releases"),
        _model_fk("releases"),
        _version_fk("releases"),
        sa.UniqueConstraint("model_id", "channel", "version", name="uq_releases_model_channel_version"),
    )
    op.create_table(
        "release_pins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_pins"),
        _model_fk("release_pins"),
        _version_fk("release_pins"),
        sa.UniqueConstraint("model_id", "channel", "device_id", name="uq_release_pins_model_channel_device"),
    )
    op.create_table(
        "release_health",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in
          ("reports", "failed_reports", "load_failures", "inference_errors", "inferences", "latency_reports")),
        *(sa.Column(c, sa.Float(), nullable=False) for c in ("p50_ms_sum", "p99_ms_sum", "p99_ms_max")),
        sa.Column("updated", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_release_health"),
        _model_fk("release_health"),
        _version_fk("release_health"),
        sa.UniqueConstraint("model_id", "version", "channel", name="uq_release_health_model_version_channel"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("wrapped_seed", sa.LargeBinary(), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.Column("retired", TZ, nullable=True),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_signing_keys"),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
        _model_fk("data_keys"),
        _version_fk("data_keys"),
        sa.UniqueConstraint("model_id", "version", name="uq_data_keys_model_version"),
    )
    op.create_table(
        "ota_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("from_sha256", sa.String(64), nullable=False),
        sa.Column("plain_sha256", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ota_objects"),
        _model_fk("ota_objects"),
        _version_fk("ota_objects"),
        sa.UniqueConstraint("model_id", "version", "kind", "path", "from_sha256", name="uq_ota_objects_identity"),
    )


def downgrade() -> None:
    for table in ("ota_objects", "data_keys", "signing_keys", "release_health", "release_pins", "releases"):
        op.drop_table(table)
