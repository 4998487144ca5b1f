"""The application's alembic environment (its own alembic_version table)."""

import sqlalchemy as sa
from alembic import context

url = context.config.get_main_option("sqlalchemy.url")
engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
