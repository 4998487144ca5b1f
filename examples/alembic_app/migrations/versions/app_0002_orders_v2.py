"""Orders gain a currency: stored records become version 2, the table a column.

Revision ID: app_0002
Revises: app_0001

The data migration runs first: it commits batch by batch on its own
connections and is idempotent, so a failure later in this revision is
repaired by running the upgrade again (and SQLite, with one writer, is not
yet locked by this revision's own schema change).
"""

import sqlalchemy as sa
from alembic import op
from records import formats

import gotstate_persist as gp
from gotstate_persist.migrations.ops import migrate_format

revision = "app_0002"
down_revision = "app_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    report = migrate_format("order", formats=formats(), keyring=gp.KeyRing.from_env())
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} order records did not migrate: {report.failed}")
    op.add_column("app_orders", sa.Column("currency", sa.String(3), server_default="EUR"))


def downgrade() -> None:
    with op.batch_alter_table("app_orders") as batch:
        batch.drop_column("currency")
