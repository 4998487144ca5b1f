"""Alembic environment for gotstate-persist's own tables.

Runs only with a connection handed over in ``config.attributes["connection"]``
(see :mod:`gotstate_persist.migrations`), so no ``alembic.ini`` or URL is read,
and it records its revision in a private version table so that an application's
own ``alembic_version`` table in the same database is never touched.
"""

from __future__ import annotations

from alembic import context

from gotstate_persist.backends._sql_tables import metadata
from gotstate_persist.migrations import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by misuse of alembic's CLI
    raise RuntimeError(
        "gotstate-persist migrations run through `gotstate-persist db upgrade URL` "
        "or gotstate_persist.migrations.upgrade(), not through a bare alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
