"""SQL backend on SQLAlchemy Core: SQLite embedded by default.

Each sealed blob is one row of ``gotstate_persist_records``; the per-key
bookkeeping row in ``gotstate_persist_keys`` is updated in the same
transaction, with a condition on the previous ``last_version``, so that an
append either wins atomically or fails with ``VersionConflict``.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout,
and every write transaction starts with ``BEGIN IMMEDIATE``: the write lock is
taken up front, so two processes appending to one file queue on the lock
instead of both reading and then failing to upgrade a shared lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from ..errors import BackendError, FormatError, InvalidArgument, NotFound, VersionConflict
from ..migrations import ensure_schema
from ._sql_tables import keys as keys_table
from ._sql_tables import records as records_table
from .base import Backend, Capabilities, KeyHead, Usage, VersionInfo

__all__ = ["SQLBackend"]

logger = logging.getLogger(__name__)

_WRITE = "gotstate_persist_write"
_SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_BUSY_TIMEOUT_MS = 30_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_r = records_table.c
_k = keys_table.c
_INFO_COLUMNS = (_r.key, _r.version, _r.kind, _r.format_version, _r.size, _r.created_at_us)
_ns = sa.bindparam("ns")
_key = sa.bindparam("key")

_SELECT_HEAD = sa.select(_k.last_version, _k.newest, _k.kind).where(
    _k.namespace == _ns, _k.key == _key
)
_INSERT_RECORD = sa.insert(records_table)
_INSERT_KEY = sa.insert(keys_table)
_SELECT_NEWEST = (
    sa.select(*_INFO_COLUMNS, _r.blob)
    .where(_r.namespace == _ns, _r.key == _key)
    .order_by(_r.version.desc())
    .limit(1)
)
_SELECT_ONE = sa.select(*_INFO_COLUMNS, _r.blob).where(
    _r.namespace == _ns, _r.key == _key, _r.version == sa.bindparam("version")
)
_SELECT_VERSIONS = (
    sa.select(*_INFO_COLUMNS).where(_r.namespace == _ns, _r.key == _key).order_by(_r.version)
)


def _to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).replace(
        microsecond=micros % 1_000_000
    )


def _to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _info(row: sa.Row[Any]) -> VersionInfo:
    return VersionInfo(
        key=row.key,
        version=row.version,
        kind=row.kind,
        format_version=row.format_version,
        size=row.size,
        created_at=_to_datetime(row.created_at_us),
    )


class SQLBackend(Backend):
    """Versioned blobs in a SQL database reached through SQLAlchemy.

    ``url`` is any SQLAlchemy URL. Options: ``upgrade`` (upgrade an outdated
    schema in place), ``busy_timeout_ms`` and ``sqlite_synchronous`` (SQLite
    durability, default ``FULL``: a save that returned survives power loss),
    ``engine_options`` (passed to ``sqlalchemy.create_engine``).
    """

    capabilities = Capabilities(transactions=True, list_is_consistent=True, cross_process=True)

    def __init__(
        self,
        url: str | sa.URL,
        *,
        upgrade: bool = False,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        sqlite_synchronous: str = "FULL",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise InvalidArgument(f"not a valid SQL URL: {exc}") from None
        self._display_url = parsed.render_as_string(hide_password=True)
        synchronous = sqlite_synchronous.upper()
        if synchronous not in _SQLITE_SYNCHRONOUS:
            raise InvalidArgument(
                f"sqlite_synchronous must be one of {', '.join(_SQLITE_SYNCHRONOUS)}, "
                f"got {sqlite_synchronous!r}"
            )
        self._closed = False
        self._lock = threading.Lock()
        self._is_sqlite = parsed.get_backend_name() == "sqlite"
        if self._is_sqlite:
            _prepare_sqlite_path(parsed)
        try:
            self._engine = sa.create_engine(parsed, **(engine_options or {}))
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as exc:
            raise InvalidArgument(
                f"cannot use {self._display_url}: {exc}; install the driver it needs "
                "(for PostgreSQL: pip install 'gotstate-persist[postgres]')"
            ) from exc
        if self._is_sqlite:
            _install_sqlite_hooks(self._engine, busy_timeout_ms, synchronous)
        try:
            with self._write() as conn:
                ensure_schema(conn, display_url=self._display_url, upgrade=upgrade)
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLBackend({self._display_url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for migrations and tooling)."""
        return self._engine

    # Connection handling: every database error is mapped here, once.

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        self._check_open()
        try:
            with self._engine.connect() as conn:
                yield conn
        except sa_exc.SQLAlchemyError as exc:
            raise self._backend_error(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        self._check_open()
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn
        except sa_exc.IntegrityError as exc:
            raise VersionConflict(
                "another writer created this version at the same time; retry the save"
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise self._backend_error(exc) from exc

    def _backend_error(self, exc: sa_exc.SQLAlchemyError) -> BackendError:
        reason = getattr(exc, "orig", None) or exc
        return BackendError(
            f"the database at {self._display_url} failed: {type(reason).__name__}: "
            f"{str(reason).splitlines()[0] if str(reason) else ''}; check that it is "
            "reachable, writable and not full, then retry"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("this store is closed; open a new one with open_store()")

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        with self._read() as conn:
            row = conn.execute(_SELECT_HEAD, {"ns": namespace, "key": key}).first()
        if row is None:
            return KeyHead()
        return KeyHead(last_version=row.last_version, newest=row.newest, kind=row.kind)

    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at: datetime,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        size = len(blob)
        micros = _to_micros(created_at)
        with self._write() as conn:
            row = conn.execute(_SELECT_HEAD, {"ns": namespace, "key": key}).first()
            last, newest, stored_kind = (0, 0, None) if row is None else row
            if expected_newest is not None and newest != expected_newest:
                raise VersionConflict(
                    f"key {key!r} is at version {newest}, not {expected_newest}: "
                    "reload it and retry, or save without expected_version",
                    expected=expected_newest,
                    actual=newest,
                )
            if version != last + 1:
                raise VersionConflict(
                    f"version {version} of key {key!r} cannot be created: the key's "
                    f"last version is {last}; retry the save",
                    expected=version - 1,
                    actual=newest,
                )
            if newest and stored_kind != kind:
                raise FormatError(
                    f"key {key!r} holds records of kind {stored_kind!r}; a {kind!r} record "
                    "cannot be saved under it: use another key, or delete the key first"
                )
            conn.execute(
                _INSERT_RECORD,
                {
                    "namespace": namespace,
                    "key": key,
                    "version": version,
                    "kind": kind,
                    "format_version": format_version,
                    "size": size,
                    "created_at_us": micros,
                    "blob": blob,
                },
            )
            if row is None:
                conn.execute(
                    _INSERT_KEY,
                    {
                        "namespace": namespace,
                        "key": key,
                        "last_version": version,
                        "newest": version,
                        "kind": kind,
                    },
                )
            else:
                updated = conn.execute(
                    sa.update(keys_table)
                    .where(_k.namespace == namespace, _k.key == key, _k.last_version == last)
                    .values(last_version=version, newest=version, kind=kind)
                )
                if updated.rowcount != 1:
                    raise VersionConflict(
                        f"another writer appended to key {key!r} at the same time; retry"
                    )
        return VersionInfo(
            key=key,
            version=version,
            kind=kind,
            format_version=format_version,
            size=size,
            created_at=_to_datetime(micros),
        )

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        with self._read() as conn:
            if version is None:
                row = conn.execute(_SELECT_NEWEST, {"ns": namespace, "key": key}).first()
            else:
                row = conn.execute(
                    _SELECT_ONE, {"ns": namespace, "key": key, "version": version}
                ).first()
        if row is None:
            which = "no stored version" if version is None else f"no version {version}"
            raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
        return _info(row), bytes(row.blob)

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        with self._read() as conn:
            rows = conn.execute(_SELECT_VERSIONS, {"ns": namespace, "key": key}).all()
        return [_info(row) for row in rows]

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        query = sa.select(_r.key).where(_r.namespace == namespace).distinct().order_by(_r.key)
        if prefix:
            # A range on the primary key instead of LIKE: LIKE is case-insensitive
            # on SQLite and would need escaping of % and _.
            query = query.where(_r.key >= prefix, sa.func.substr(_r.key, 1, len(prefix)) == prefix)
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def namespaces(self) -> list[str]:
        query = sa.select(_r.namespace).distinct().order_by(_r.namespace)
        with self._read() as conn:
            return list(conn.execute(query).scalars())

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        where = (_r.namespace == namespace, _r.key == key)
        with self._write() as conn:
            stored = set(conn.execute(sa.select(_r.version).where(*where)).scalars())
            if not stored:
                raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
            doomed = stored if versions is None else set(versions)
            missing = doomed - stored
            if missing:
                raise NotFound(
                    f"key {key!r} has no version(s) {sorted(missing)}; nothing was deleted"
                )
            conn.execute(sa.delete(records_table).where(*where, _r.version.in_(sorted(doomed))))
            remaining = stored - doomed
            conn.execute(
                sa.update(keys_table)
                .where(_k.namespace == namespace, _k.key == key)
                .values(
                    newest=max(remaining, default=0),
                    kind=_k.kind if remaining else None,
                )
            )
        return len(doomed)

    def usage(self, namespace: str) -> Usage:
        query = sa.select(
            sa.func.coalesce(sa.func.sum(_r.size), 0),
            sa.func.count(),
            sa.func.count(sa.distinct(_r.key)),
        ).where(_r.namespace == namespace)
        with self._read() as conn:
            total, records, keys = conn.execute(query).one()
        return Usage(bytes=int(total), records=int(records), keys=int(keys))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine.dispose()


def _prepare_sqlite_path(url: sa.URL) -> None:
    """Create the database file's directory, so ``sqlite:///.gotstate/x.db`` just works."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError(
            f"cannot create the directory for SQLite database {database!r}: {exc.strerror}; "
            "choose a writable path"
        ) from exc


def _install_sqlite_hooks(engine: sa.Engine, busy_timeout_ms: int, synchronous: str) -> None:
    """Take over transaction control from pysqlite so writes can BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
