"""Schema management for the SQL backend, with alembic shipped as package data.

The alembic ``Config`` is built in code, so users need no ``alembic.ini``; the
revision is kept in the private table :data:`VERSION_TABLE` so that an
application's own alembic history in the same database is never touched.

Opening a store only *reads* the version table (a single SELECT, no alembic
import) and runs alembic only to create a fresh schema or when asked to
upgrade, which keeps ``open_store`` cheap.

Several processes may open one fresh database at the same moment. Whoever
changes the schema first takes the database's schema lock inside the same
transaction and looks again: on SQLite that lock is the write lock that
``BEGIN IMMEDIATE`` already holds, on PostgreSQL a transaction-scoped advisory
lock. The others wait for it, then see the finished schema and change nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..errors import SchemaOutdated, SchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "REVISIONS", "VERSION_TABLE", "current_revision", "ensure_schema"]

logger = logging.getLogger(__name__)

VERSION_TABLE = "gotstate_persist_alembic_version"
#: Every released revision, oldest first. A test checks this against alembic's graph.
REVISIONS: tuple[str, ...] = ("v0.1.0.a", "v0.2.0.a")
HEAD_REVISION = REVISIONS[-1]
#: PostgreSQL advisory lock key held while the schema is created or upgraded
#: (the first 8 bytes of sha256(b"gotstate_persist.schema") as a signed int64).
SCHEMA_LOCK_KEY = -0x3F5C_78B5_A031_D187
_HERE = Path(__file__).resolve().parent


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Build the alembic configuration for gotstate-persist's revisions in code."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(_HERE))
    config.set_main_option("version_locations", str(_HERE / "versions"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(connection: sa.Connection) -> str | None:
    """Return the schema revision recorded in the database, or None if fresh."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    table = sa.table(VERSION_TABLE, sa.column("version_num", sa.String))
    rows = connection.execute(sa.select(table.c.version_num)).scalars().all()
    if not rows:
        return None
    if len(rows) > 1:
        raise SchemaTooNew(
            f"the database records several gotstate-persist schema heads {sorted(rows)}; "
            "it was changed by a newer or patched gotstate-persist: upgrade gotstate-persist"
        )
    return str(rows[0])


def ensure_schema(connection: sa.Connection, *, display_url: str, upgrade: bool) -> None:
    """Create a fresh schema, or check (and optionally upgrade) an existing one.

    ``connection`` must be inside a write transaction so that two processes
    opening one fresh database cannot both create the tables.
    ``display_url`` is the URL with its password masked, for messages.
    """
    revision = current_revision(connection)
    if revision == HEAD_REVISION:
        return
    _lock_schema(connection)
    revision = current_revision(connection)  # as left by whoever held the lock before us
    if revision == HEAD_REVISION:
        return
    if revision is not None and revision not in REVISIONS:
        raise SchemaTooNew(
            f"the database at {display_url} has gotstate-persist schema revision "
            f"{revision!r}, newer than this version knows (newest {HEAD_REVISION!r}); "
            "upgrade gotstate-persist (pip install -U gotstate-persist). Nothing was changed."
        )
    if revision is not None and not upgrade:
        raise SchemaOutdated(
            f"the database at {display_url} has gotstate-persist schema revision "
            f"{revision!r}, older than this version needs ({HEAD_REVISION!r}); back it up, "
            f"then run: gotstate-persist db upgrade '{display_url}' "
            "(or pass upgrade=True to open_store)"
        )
    _run_upgrade(connection, HEAD_REVISION)
    logger.info("gotstate-persist schema at %s is now %s", display_url, HEAD_REVISION)


def _lock_schema(connection: sa.Connection) -> None:
    """Hold the schema lock until the transaction ends (see the module docstring)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=SCHEMA_LOCK_KEY)
        )


def _run_upgrade(connection: sa.Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)
