"""Catalog rows name their object exactly, and announce a rewrite before it starts.

Revision ID: v0.3.0.a
Revises: v0.2.0.a
Create Date: 2026-12-03

An object store with a SQL catalog rewrites a record (``migrate``,
``reseal``) by creating a new object and then switching the row to it. Before
this revision the new object's name was derived from the format version alone,
so a sweep running meanwhile could not tell a rewrite's new object from a
leftover and removed it, and the switched row then named nothing. From this
revision on:

* ``object_token`` (NULL for objects named by version and format alone, as
  every object written so far) makes the name of each rewritten object unique,
  so no two attempts ever share a name;
* ``pending_token`` and ``pending_at_us`` announce a rewrite's new object
  *before* it is created: a sweep keeps every object a row or an announcement
  names, and an announcement older than the stale-reservation age is taken
  back (by compare-and-set) before its object is removed.

``gotstate_persist_meta`` holds the database's identity as a catalog
(``catalog_id``, made at its first catalog write and recorded in the object
store's layout marker), so a prefix opened with another catalog is refused
instead of looking empty (and being swept empty).

SQL-native records leave all three NULL. Downgrading is refused while any row
names a rewritten object, because the older code could not find it.
Released revisions are frozen: schema changes go into new revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "v0.3.0.a"
down_revision = "v0.2.0.a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gotstate_persist_records") as batch:
        batch.add_column(sa.Column("object_token", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("pending_token", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("pending_at_us", sa.BigInteger, nullable=True))
    op.create_table(
        "gotstate_persist_meta",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    named = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM gotstate_persist_records WHERE object_token IS NOT NULL")
    )
    if named.scalar_one():
        raise RuntimeError(
            "cannot downgrade below v0.3.0.a: catalog rows name rewritten objects that older "
            "versions of gotstate-persist cannot find; keep this revision"
        )
    op.drop_table("gotstate_persist_meta")
    with op.batch_alter_table("gotstate_persist_records") as batch:
        batch.drop_column("pending_at_us")
        batch.drop_column("pending_token")
        batch.drop_column("object_token")
