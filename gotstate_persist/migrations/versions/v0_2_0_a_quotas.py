"""Usage counters and quotas per namespace, stored-version counts, catalog reservations.

Revision ID: v0.2.0.a
Revises: v0.1.0.a
Create Date: 2026-11-25

The counters of existing data are computed here, in the upgrade's own
transaction, so an upgraded database starts with counters equal to a recount.
Released revisions are frozen: schema changes go into new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0.2.0.a"
down_revision = "v0.1.0.a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gotstate_persist_records") as batch:
        batch.add_column(sa.Column("reserved_at_us", sa.BigInteger, nullable=True))
    with op.batch_alter_table("gotstate_persist_keys") as batch:
        batch.add_column(
            sa.Column("versions", sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )
    op.create_table(
        "gotstate_persist_namespaces",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("records", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("keys", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("max_bytes", sa.BigInteger, nullable=True),
        sa.Column("max_records", sa.BigInteger, nullable=True),
        sa.Column("max_keys", sa.BigInteger, nullable=True),
        sa.Column("max_blob_bytes", sa.BigInteger, nullable=True),
        sa.Column("max_versions_per_key", sa.BigInteger, nullable=True),
        sa.Column("retention", sa.String(16), nullable=False, server_default="reject"),
        sa.Column("max_writes_per_second", sa.BigInteger, nullable=True),
        sa.Column("max_reads_per_second", sa.BigInteger, nullable=True),
    )
    op.execute(
        "UPDATE gotstate_persist_keys SET versions = (SELECT COUNT(*) FROM "
        "gotstate_persist_records r WHERE r.namespace = gotstate_persist_keys.namespace "
        'AND r."key" = gotstate_persist_keys."key")'
    )
    op.execute(
        "INSERT INTO gotstate_persist_namespaces (namespace, bytes, records, keys) "
        'SELECT namespace, COALESCE(SUM(size), 0), COUNT(*), COUNT(DISTINCT "key") '
        "FROM gotstate_persist_records GROUP BY namespace"
    )


def downgrade() -> None:
    op.drop_table("gotstate_persist_namespaces")
    with op.batch_alter_table("gotstate_persist_keys") as batch:
        batch.drop_column("versions")
    with op.batch_alter_table("gotstate_persist_records") as batch:
        batch.drop_column("reserved_at_us")
