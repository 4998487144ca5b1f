"""The application's own table.

Revision ID: app_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "app_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_orders",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("total_cents", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("app_orders")
