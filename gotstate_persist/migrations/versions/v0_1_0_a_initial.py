"""Initial schema: records and per-key version bookkeeping (release 0.1.0).

Revision ID: v0.1.0.a
Revises:
Create Date: 2026-11-25

Released revisions are frozen: schema changes go into new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0.1.0.a"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gotstate_persist_records",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("format_version", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "gotstate_persist_keys",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("last_version", sa.BigInteger, nullable=False),
        sa.Column("newest", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("gotstate_persist_keys")
    op.drop_table("gotstate_persist_records")
