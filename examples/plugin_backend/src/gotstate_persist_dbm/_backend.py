"""``DbmBackend``: versioned sealed blobs in one ``dbm.dumb`` database.

Layout. Everything the backend knows lives in the *names* of the database's
entries, so opening a store reads only dbm's own index, never a blob. Every
name is a JSON array (ASCII, so any namespace or key text is stored exactly and
two different names can never collide):

``["layout", 1]`` -> ``b""``
    Written once when the database is created, so that files from elsewhere, or
    from a newer layout, are refused instead of misread.
``["v", namespace, key, version, kind, format_version, size, created_at_us]`` -> blob
    One entry per stored version, created once and never rewritten.
``["last", namespace, key, last_version]`` -> ``b""``
    Written by ``delete`` before anything is removed, so the highest version a
    key ever had survives the deletion of its versions.

Every write adds a new entry; nothing is updated in place. ``dbm.dumb``
appends a new entry's value to ``BASE.dat`` and then one line to its index,
``BASE.dir``; that line is the commit point, so a process that dies during a
``put`` leaves either the whole version or nothing. Deleting (and closing)
makes ``dbm.dumb`` rewrite its index, renaming the old one to ``BASE.bak``
first; a crash at that moment leaves no ``BASE.dir``, which the next open
reports instead of starting empty.

Concurrency. One lock serialises every operation in the process (``dbm.dumb``
is not thread-safe), and an exclusive ``flock`` on ``BASE.lock`` keeps a second
process or a second backend instance from opening the same files. ``dbm.dumb``
keeps its index in memory, so sharing is impossible, hence
``cross_process=False``.

Limits, said plainly: ``dbm.dumb`` never calls ``fsync`` (a process crash loses
nothing that was acknowledged, a power failure may), deleted blobs' space in
``BASE.dat`` is not reclaimed, and each delete rewrites the whole index.
"""

from __future__ import annotations

import dbm.dumb
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from gotstate_persist.backends import (
    Backend,
    Capabilities,
    KeyHead,
    Usage,
    VersionInfo,
    is_system_key,
)
from gotstate_persist.errors import (
    BackendError,
    FormatError,
    InvalidArgument,
    NotFound,
    VersionConflict,
)

__all__ = ["LAYOUT_VERSION", "DbmBackend"]

logger = logging.getLogger(__name__)

#: Version of the entry-name layout described in the module docstring.
LAYOUT_VERSION = 1

_URL_HELP = "use an absolute path such as 'dbm:///var/lib/app/state' (no host, no query)"


class _Dbm(Protocol):
    """The part of the ``dbm`` interface this backend uses (any dbm flavour has it)."""

    def __getitem__(self, name: bytes, /) -> bytes: ...
    def __setitem__(self, name: bytes, value: bytes, /) -> None: ...
    def __delitem__(self, name: bytes, /) -> None: ...
    def __contains__(self, name: object, /) -> bool: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


# Entry names.


def _name(*parts: str | int) -> bytes:
    return json.dumps(parts, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _version_name(namespace: str, info: VersionInfo) -> bytes:
    return _name(
        "v",
        namespace,
        info.key,
        info.version,
        info.kind,
        info.format_version,
        info.size,
        info.created_at_us,
    )


def _last_name(namespace: str, key: str, last_version: int) -> bytes:
    return _name("last", namespace, key, last_version)


@dataclass(frozen=True)
class _Layout:
    version: int


@dataclass(frozen=True)
class _Stored:
    namespace: str
    info: VersionInfo


@dataclass(frozen=True)
class _Last:
    namespace: str
    key: str
    last_version: int


def _parse_name(raw: bytes) -> _Layout | _Stored | _Last | None:
    """What an entry name says, or None for a name this layout never writes."""
    try:
        parts = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    match parts:
        case ["layout", int(layout)]:
            return _Layout(layout)
        case ["v", str(ns), str(key), int(version), str(kind), int(fmt), int(size), int(created)]:
            return _Stored(ns, VersionInfo(key, version, kind, fmt, size, created))
        case ["last", str(ns), str(key), int(last)]:
            return _Last(ns, key, last)
    return None


# The in-memory catalog, rebuilt from the entry names whenever the file is opened.


@dataclass
class _KeyState:
    """One key: its stored versions (ascending) and the highest version it ever had."""

    last_version: int = 0
    stored: dict[int, tuple[VersionInfo, bytes]] = field(default_factory=dict)
    marker: bytes | None = None  # the key's current "last" entry, if a delete wrote one

    @property
    def newest(self) -> int:
        return next(reversed(self.stored), 0)

    @property
    def kind(self) -> str | None:
        newest = self.newest
        return self.stored[newest][0].kind if newest else None


_Catalog = dict[str, dict[str, _KeyState]]


def _build_catalog(names: Iterable[bytes], where: str) -> tuple[_Catalog, int | None]:
    """The catalog and the layout version, read from entry names alone."""
    catalog: _Catalog = {}
    layout: int | None = None
    ignored = 0
    for raw in names:
        entry = _parse_name(raw)
        if entry is None:
            ignored += 1
        elif isinstance(entry, _Layout):
            layout = max(layout or 0, entry.version)
        else:
            key = entry.info.key if isinstance(entry, _Stored) else entry.key
            state = catalog.setdefault(entry.namespace, {}).setdefault(key, _KeyState())
            if isinstance(entry, _Last):
                if entry.last_version >= state.last_version:
                    state.marker = raw
                state.last_version = max(state.last_version, entry.last_version)
            else:
                version = entry.info.version
                if version in state.stored:
                    raise BackendError(
                        f"the dbm store {where} holds two entries for version {version} of "
                        f"key {key!r}: it was changed outside gotstate-persist-dbm; "
                        "restore it from a backup"
                    )
                state.stored[version] = (entry.info, raw)
                state.last_version = max(state.last_version, version)
    for keys in catalog.values():
        for state in keys.values():
            state.stored = dict(sorted(state.stored.items()))
    if ignored:
        logger.warning("dbm store %s: ignored %d entries of an unknown shape", where, ignored)
    return catalog, layout


def _checked_put(
    version: object, blob: object, kind: object, format_version: object, created_at_us: object
) -> bytes:
    """The blob as bytes, once every value is one the entry name can hold exactly."""
    if not isinstance(kind, str):
        raise InvalidArgument(f"kind must be a str, got {type(kind).__name__}")
    for what, value in (
        ("version", version),
        ("format_version", format_version),
        ("created_at_us", created_at_us),
    ):
        if type(value) is not int:
            raise InvalidArgument(f"{what} must be an int, got {type(value).__name__}")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"blob must be bytes, got {type(blob).__name__}")
    return bytes(blob)


# Locating and locking the files.


def _base_path(url: str) -> Path:
    """``dbm:///abs/path/state`` -> ``/abs/path/state`` (the files get suffixes)."""
    if not isinstance(url, str):
        raise InvalidArgument(f"a dbm store URL must be a str; {_URL_HELP}")
    parts = urlsplit(url)
    if (
        parts.scheme.lower() != "dbm"
        or parts.netloc not in ("", "localhost")
        or parts.query
        or parts.fragment
        or not parts.path.startswith("/")
    ):
        raise InvalidArgument(f"{url!r} is not a dbm store URL: {_URL_HELP}")
    path = unquote(parts.path)
    if path.endswith("/"):
        raise InvalidArgument(
            f"{url!r} names a directory; name the database itself (the backend creates "
            f"BASE.dat, BASE.dir and BASE.lock): {_URL_HELP}"
        )
    return Path(path)


class _FileLock:
    """An exclusive, non-blocking ``flock`` held for the backend's lifetime (POSIX).

    Kept as a file object, so that even a backend that is never closed
    releases the lock when it is garbage-collected.
    """

    def __init__(self, path: Path, mode: int) -> None:
        self._file: BinaryIO | None = None
        if sys.platform == "win32":  # pragma: no cover - no flock; one process, by convention
            return
        import fcntl

        file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, mode), "r+b", buffering=0)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            file.close()
            raise
        self._file = file

    def release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()  # closing the descriptor releases the flock


class DbmBackend(Backend):
    """A gotstate-persist backend storing everything in one ``dbm.dumb`` database.

    ``url`` is ``dbm:///absolute/path/base``; the backend creates ``base.dat``,
    ``base.dir`` (and ``base.bak``, ``base.lock``) next to each other. Options:
    ``mode`` (permission bits of the files, default ``0o600``), ``create``
    (default True: create a missing database and its directory) and
    ``upgrade`` (accepted because ``open_store(upgrade=True)`` passes it on;
    this layout has nothing to upgrade).

    One process at a time: a second opener of the same files, in this process
    or another, gets ``BackendError``.
    """

    capabilities = Capabilities(transactions=False, list_is_consistent=True, cross_process=False)

    def __init__(
        self, url: str, *, mode: int = 0o600, create: bool = True, upgrade: bool = False
    ) -> None:
        del upgrade  # nothing to upgrade
        if type(mode) is not int or not 0 <= mode <= 0o777:
            raise InvalidArgument(f"mode must be permission bits such as 0o600, got {mode!r}")
        self._base = _base_path(url)
        self._where = str(self._base)
        self._lock = threading.Lock()
        dat, index, backup = (
            self._base.with_name(self._base.name + s) for s in (".dat", ".dir", ".bak")
        )
        if not create and not dat.exists():
            raise BackendError(
                f"there is no dbm store at {self._where}: create it with create=True "
                "or check the URL"
            )
        with self._storage("opening"):
            if create:
                self._base.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._file_lock = _FileLock(self._base.with_name(self._base.name + ".lock"), mode)
            except BlockingIOError as exc:
                raise BackendError(
                    f"the dbm store {self._where} is already open (in this process or another); "
                    "dbm.dumb files serve one backend at a time: close the other one first"
                ) from exc
        try:
            stored_before = dat.exists() and (dat.stat().st_size > 0 or backup.exists())
            if stored_before and not index.exists():
                hint = (
                    f" {backup} holds the index from just before; after checking it, rename "
                    f"it to {index}"
                    if backup.exists()
                    else ""
                )
                raise BackendError(
                    f"the dbm store {self._where} has data but no index ({index}): a process "
                    f"probably stopped while rewriting it.{hint}"
                )
            with self._storage("opening"):
                try:
                    db: _Dbm = dbm.dumb.open(str(self._base), "c", mode)  # noqa: SIM115
                except (SyntaxError, ValueError) as exc:  # a damaged index line
                    raise BackendError(
                        f"the index of the dbm store {self._where} is damaged ({exc}); "
                        "restore it from a backup"
                    ) from exc
            self._db: _Dbm | None = db
            try:
                self._catalog = self._load_catalog(db)
            except BaseException:
                db.close()
                raise
        except BaseException:
            self._file_lock.release()
            raise

    def __repr__(self) -> str:
        return f"DbmBackend({self._where!r})"

    # Plumbing: the open database, error mapping, the catalog.

    def _load_catalog(self, db: _Dbm) -> _Catalog:
        names = list(db)
        catalog, layout = _build_catalog(names, self._where)
        if layout is None:
            if names:
                raise BackendError(
                    f"{self._where} is a dbm database but not a gotstate-persist-dbm store; "
                    "choose another path"
                )
            with self._storage("initialising"):
                db[_name("layout", LAYOUT_VERSION)] = b""
        elif layout > LAYOUT_VERSION:
            raise BackendError(
                f"the dbm store {self._where} uses layout {layout}, newer than this "
                f"gotstate-persist-dbm understands ({LAYOUT_VERSION}): upgrade the package"
            )
        return catalog

    def _open_db(self) -> _Dbm:
        if self._db is None:
            raise BackendError(
                f"the dbm store {self._where} is closed; open a new one with open_store()"
            )
        return self._db

    @contextmanager
    def _storage(self, action: str) -> Iterator[None]:
        """Map file-system errors to ``BackendError`` (cause chained)."""
        try:
            yield
        except OSError as exc:  # dbm.dumb.error is OSError
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise BackendError(
                f"the dbm store {self._where} failed while {action}: {reason}; check that "
                "its directory exists, is writable and the disk is not full, then retry"
            ) from exc

    @contextmanager
    def _writing(self, db: _Dbm, action: str) -> Iterator[None]:
        """Like ``_storage``, and afterwards re-read the catalog if the write failed half-way."""
        try:
            with self._storage(action):
                yield
        except BackendError:
            self._catalog, _ = _build_catalog(list(db), self._where)
            raise

    def _state(self, namespace: str, key: str) -> _KeyState | None:
        return self._catalog.get(namespace, {}).get(key)

    # The Backend contract.

    def head(self, namespace: str, key: str) -> KeyHead:
        with self._lock:
            self._open_db()
            state = self._state(namespace, key)
            if state is None:
                return KeyHead()
            return KeyHead(last_version=state.last_version, newest=state.newest, kind=state.kind)

    def put(
        self,
        namespace: str,
        key: str,
        version: int,
        blob: bytes,
        *,
        kind: str,
        format_version: int,
        created_at_us: int,
        expected_newest: int | None = None,
    ) -> VersionInfo:
        blob = _checked_put(version, blob, kind, format_version, created_at_us)
        with self._lock:
            db = self._open_db()
            state = self._state(namespace, key) or _KeyState()
            newest = state.newest
            if expected_newest is not None and newest != expected_newest:
                raise VersionConflict(
                    f"key {key!r} is at version {newest}, not {expected_newest}: "
                    "reload it and retry, or save without expected_version",
                    expected=expected_newest,
                    actual=newest,
                )
            if newest and state.kind != kind:
                raise FormatError(
                    f"key {key!r} holds records of kind {state.kind!r}; a {kind!r} record "
                    "cannot be saved under it: use another key, or delete the key first"
                )
            if version <= state.last_version:
                raise VersionConflict(
                    f"version {version} of key {key!r} cannot be created: the key already "
                    f"reached version {state.last_version}; retry the save",
                    expected=version - 1,
                    actual=newest,
                )
            info = VersionInfo(key, version, kind, format_version, len(blob), created_at_us)
            name = _version_name(namespace, info)
            with self._writing(db, f"writing version {version} of key {key!r}"):
                try:
                    db[name] = blob
                except BaseException:
                    with suppress(OSError, KeyError):
                        del db[name]  # dbm may have indexed the name before failing
                    raise
            state.stored[version] = (info, name)
            state.last_version = version
            self._catalog.setdefault(namespace, {})[key] = state
            return info

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        with self._lock:
            db = self._open_db()
            state = self._state(namespace, key)
            wanted = (state.newest if state else 0) if version is None else version
            found = state.stored.get(wanted) if state else None
            if found is None:
                which = "no stored version" if version is None else f"no version {version}"
                raise NotFound(f"key {key!r} in namespace {namespace!r} has {which}")
            info, name = found
            with self._storage(f"reading version {wanted} of key {key!r}"):
                blob = db[name]
        if len(blob) != info.size:
            raise BackendError(
                f"version {wanted} of key {key!r} in the dbm store {self._where} is truncated "
                f"({len(blob)} of {info.size} bytes): restore the store from a backup"
            )
        return info, blob

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        with self._lock:
            self._open_db()
            state = self._state(namespace, key)
            return [info for info, _name in state.stored.values()] if state else []

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        with self._lock:
            self._open_db()
            keys = self._catalog.get(namespace, {})
            return sorted(k for k, s in keys.items() if s.stored and k.startswith(prefix))

    def namespaces(self) -> list[str]:
        with self._lock:
            self._open_db()
            return sorted(
                ns for ns, keys in self._catalog.items() if any(s.stored for s in keys.values())
            )

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        with self._lock:
            db = self._open_db()
            state = self._state(namespace, key)
            if state is None or not state.stored:
                raise NotFound(f"key {key!r} in namespace {namespace!r} has no stored version")
            doomed = sorted(state.stored if versions is None else set(versions))
            missing = [v for v in doomed if v not in state.stored]
            if missing:
                raise NotFound(f"key {key!r} has no version(s) {missing}; nothing was deleted")
            with self._writing(db, f"deleting versions of key {key!r}"):
                # Remember the highest version first, so no crash can let it be reused.
                marker = _last_name(namespace, key, state.last_version)
                if marker != state.marker:
                    db[marker] = b""
                    if state.marker is not None:
                        del db[state.marker]
                    state.marker = marker
                for version in doomed:
                    del db[state.stored[version][1]]
                    del state.stored[version]
                db.sync()
            return len(doomed)

    def usage(self, namespace: str) -> Usage:
        with self._lock:
            self._open_db()
            held = {k: s for k, s in self._catalog.get(namespace, {}).items() if s.stored}
            states = held.values()
            return Usage(
                bytes=sum(info.size for s in states for info, _name in s.stored.values()),
                records=sum(len(s.stored) for s in states),
                # the library's own records (system keys) are records, but no key
                keys=sum(1 for key in held if not is_system_key(key)),
            )

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            if db is None:
                return
            try:
                with self._storage("closing"):
                    db.close()
            finally:
                self._file_lock.release()
