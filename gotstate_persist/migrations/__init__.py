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

Deployment tools use :func:`upgrade`, :func:`current` and :func:`check` (also
``gotstate-persist db upgrade|current|check URL``): they take a URL, open and
close their own short-lived engine, and report problems with the URL's
password masked, like every other error of the library.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from .._redact import MASK, mask_url, safe_cause, scrub, url_secrets
from ..errors import BackendError, InvalidArgument, NotFound, SchemaOutdated, SchemaTooNew

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "REVISIONS",
    "VERSION_TABLE",
    "check",
    "current",
    "current_revision",
    "ensure_schema",
    "upgrade",
]

logger = logging.getLogger(__name__)

VERSION_TABLE = "gotstate_persist_alembic_version"
#: Every released revision, oldest first. A test checks this against alembic's graph.
REVISIONS: tuple[str, ...] = ("v0.1.0.a", "v0.2.0.a", "v0.3.0.a")
HEAD_REVISION = REVISIONS[-1]
#: PostgreSQL advisory lock key held while the schema is created or upgraded
#: (the first 8 bytes of sha256(b"gotstate_persist.schema") as a signed int64).
SCHEMA_LOCK_KEY = -0x3F5C_78B5_A031_D187
_HERE = Path(__file__).resolve().parent
#: How long upgrade() waits for another SQLite writer (the SQL backend's default).
_SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option marking a connection whose transactions change the schema.
_WRITE = "gotstate_persist_schema_write"


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
        raise _too_new(revision, display_url)
    if revision is not None and not upgrade:
        raise _outdated(revision, display_url)
    _run_upgrade(connection, HEAD_REVISION)
    logger.info("gotstate-persist schema at %s is now %s", display_url, HEAD_REVISION)


def upgrade(url: str | sa.URL, revision: str = "head") -> str:
    """Create or upgrade gotstate-persist's schema in the database at ``url``.

    For deployment steps that migrate before the application starts (rather
    than passing ``upgrade=True`` to ``open_store`` in every process).
    ``revision`` is ``"head"`` (this version's newest) or one of
    :data:`REVISIONS`. Running it again changes nothing, and it never
    downgrades: a database already at or past ``revision`` is left as it is.
    It takes the same schema lock as opening a store, so it is safe while
    other processes open the database. Returns the revision now recorded.

    Raises ``SchemaTooNew`` (nothing changed) for a schema written by a newer
    gotstate-persist, ``BackendError`` when the database cannot be reached.
    """
    target = _target_revision(revision)
    with _connection(url, write=True) as (conn, display_url), conn.begin():
        return _upgrade_locked(conn, target, display_url)


def current(url: str | sa.URL) -> str | None:
    """Return the gotstate-persist schema revision recorded at ``url``, or None.

    None means the database holds no gotstate-persist schema (or, for
    SQLite, that the file does not exist). Only reads: it never creates a
    file or a table nor takes a write lock, so it is safe to point at any
    database, and it works on outdated schemas that ``open_store`` refuses.
    A revision this version does not know (written by a newer release) is
    returned as recorded; a version table holding several revisions raises
    ``SchemaTooNew``.
    """
    parsed = _parse(url)
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.exists():
        return None  # connecting would create the file
    with _connection(parsed, write=False) as (conn, _display_url), conn.begin():
        return current_revision(conn)


def check(url: str | sa.URL) -> None:
    """Raise unless the schema at ``url`` is exactly the one this version uses.

    For readiness probes and CI gates, without opening a store: returns None
    when the schema is current. Raises ``SchemaOutdated`` with the exact
    upgrade command, ``SchemaTooNew`` when a newer gotstate-persist wrote it,
    and ``NotFound`` when the database holds no gotstate-persist schema (as
    a store opened with ``create=False`` does). Changes nothing.
    """
    revision = current(url)
    display_url = _display(_parse(url))
    if revision == HEAD_REVISION:
        return
    if revision is None:
        raise NotFound(
            f"{display_url} holds no gotstate-persist store; check the URL, or create "
            f"the schema with: gotstate-persist db upgrade '{display_url}'"
        )
    if revision not in REVISIONS:
        raise _too_new(revision, display_url)
    raise _outdated(revision, display_url)


def _too_new(revision: str, display_url: str) -> SchemaTooNew:
    return SchemaTooNew(
        f"the database at {display_url} has gotstate-persist schema revision "
        f"{revision!r}, newer than this version knows (newest {HEAD_REVISION!r}); "
        "upgrade gotstate-persist (pip install -U gotstate-persist). Nothing was changed."
    )


_MASKED_HINT = f"with the credentials shown as {MASK} written back in "


def _outdated(revision: str, display_url: str) -> SchemaOutdated:
    return SchemaOutdated(
        f"the database at {display_url} has gotstate-persist schema revision "
        f"{revision!r}, older than this version needs ({HEAD_REVISION!r}); back it up, "
        f"then run: gotstate-persist db upgrade '{display_url}' "
        f"{_MASKED_HINT if MASK in display_url else ''}(or pass upgrade=True to open_store)"
    )


def _target_revision(revision: str) -> str:
    if revision == "head":
        return HEAD_REVISION
    if revision not in REVISIONS:
        raise InvalidArgument(
            f"unknown gotstate-persist schema revision {revision!r}; use 'head' or one of "
            f"{', '.join(REVISIONS)}"
        )
    return revision


def _reached(revision: str | None, target: str) -> bool:
    """Whether a known ``revision`` is ``target`` or newer."""
    return revision in REVISIONS and REVISIONS.index(str(revision)) >= REVISIONS.index(target)


def _upgrade_locked(connection: sa.Connection, target: str, display_url: str) -> str:
    """Upgrade to ``target`` inside the caller's write transaction; return the revision."""
    revision = current_revision(connection)
    if _reached(revision, target):
        return str(revision)
    _lock_schema(connection)
    revision = current_revision(connection)  # as left by whoever held the lock before us
    if revision is not None and revision not in REVISIONS:
        raise _too_new(revision, display_url)
    if _reached(revision, target):
        return str(revision)
    _run_upgrade(connection, target)
    logger.info("gotstate-persist schema at %s is now %s", display_url, target)
    return target


def _parse(url: str | sa.URL) -> sa.URL:
    try:
        return sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # the parser's message quotes the URL (or a password it took for a port)
        raise InvalidArgument(
            f"{mask_url(url)} is not a valid SQL URL ({type(exc).__name__}); write it as "
            "dialect://user:password@host:port/database, percent-encoding special "
            "characters of the user name and password (such as '@' as %40)"
        ) from None


def _display(url: sa.URL) -> str:
    return mask_url(url)


def _sqlite_file(url: sa.URL) -> Path | None:
    """The file of a SQLite URL (None for in-memory and ``file:`` URI databases)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _engine(url: str | sa.URL) -> sa.Engine:
    """A one-shot engine for ``url``: no pool, SQLite set up as the SQL backend does.

    SQLite connections run in the driver's autocommit mode and issue ``BEGIN``
    themselves (``BEGIN IMMEDIATE`` on connections with the write option), so
    DDL is transactional and the schema lock is the database's write lock.
    """
    parsed = _parse(url)
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
        secrets = url_secrets(parsed)
        raise InvalidArgument(
            f"cannot use {_display(parsed)}: {scrub(str(exc), secrets)}; install the driver "
            "it needs (for PostgreSQL: pip install 'gotstate-persist[postgres]')"
        ) from safe_cause(exc, secrets)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            dbapi_connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            dbapi_connection.execute("PRAGMA synchronous = FULL")

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get(_WRITE)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def _connection(url: str | sa.URL, *, write: bool) -> Iterator[tuple[sa.Connection, str]]:
    """Yield ``(connection, display_url)``; database failures become ``BackendError``.

    With ``write``, the SQLite file's directory is created, and the
    connection's transactions take the write lock (SQLite) or run at READ
    COMMITTED, so that a schema another process created while we waited for
    the schema lock is seen (PostgreSQL).
    """
    parsed = _parse(url)
    display_url = _display(parsed)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    path = _sqlite_file(parsed) if is_sqlite else None
    if path is not None and write:
        try:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"cannot create the directory for SQLite database {str(path)!r}: "
                f"{exc.strerror}; choose a writable path"
            ) from exc
    engine = _engine(parsed)
    try:
        with engine.connect() as conn:
            if write:
                options: dict[str, Any] = {_WRITE: True}
                if not is_sqlite:
                    options["isolation_level"] = "READ COMMITTED"
                conn.execution_options(**options)
            yield conn, display_url
    except sa_exc.SQLAlchemyError as exc:
        secrets = [*url_secrets(url), *url_secrets(parsed)]
        raise _backend_error(exc, parsed, secrets) from safe_cause(exc, secrets)
    finally:
        engine.dispose()


def _backend_error(exc: BaseException, url: sa.URL, secrets: list[str]) -> BackendError:
    reason = getattr(exc, "orig", None) or exc
    # drivers do not echo credentials, but never rely on that
    first_line = scrub(str(reason).splitlines()[0], secrets) if str(reason) else ""
    return BackendError(
        f"the database at {_display(url)} failed: {type(reason).__name__}: {first_line}; "
        "check that it is reachable, that the URL's database, user and password are right, "
        "and that it is writable and not full, then retry"
    )


def _lock_schema(connection: sa.Connection) -> None:
    """Hold the schema lock until the transaction ends (see the module docstring)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=SCHEMA_LOCK_KEY)
        )


def _run_upgrade(connection: sa.Connection, revision: str) -> None:
    from ._quiet import quiet_alembic

    with quiet_alembic():  # our own INFO line says what happened; alembic's would only add noise
        from alembic import command

        command.upgrade(alembic_config(connection), revision)
