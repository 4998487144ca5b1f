"""How a ``gotstate-persist`` command opens the stores it is given.

A command reads what is there: it never creates a SQL schema, a SQLite file
or a store directory on the way (a mistyped URL would otherwise look like an
empty store), and it refuses a store that lives only in one process's memory,
which a new process always finds empty. Every command opens stores through
these rules, so a mistyped URL is the same clear error everywhere.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from .._redact import mask_url
from ..backends import Backend, open_backend
from ..errors import InvalidArgument

__all__ = [
    "LOST_AT_EXIT",
    "READ_IN_NEW_PROCESS",
    "SQL_SCHEMES",
    "check_existing_sqlite",
    "open_existing",
    "refuse_process_local",
]

SQL_SCHEMES = ("sqlite", "postgresql")
#: fsspec's names for the local file system, whose store directory opening would create.
_LOCAL_SCHEMES = ("file", "local")


def open_existing(url: str, catalog: str | None = None) -> Backend:
    """Open a backend for reading; refuse a missing SQLite file or local directory.

    With ``catalog``, ``url`` is an object store whose versions and usage live
    in that SQL database (open_store's ``catalog=``), opened the same careful way.
    """
    refuse_process_local(url, READ_IN_NEW_PROCESS)
    if catalog is not None:
        refuse_process_local(catalog, READ_IN_NEW_PROCESS)
        check_existing_sqlite(catalog)
        _check_existing_directory(url)  # opening the object store would create it
        return open_backend(url, catalog=catalog, catalog_options={"create": False})
    check_existing_sqlite(url)
    return _open_local_or_server(url)


READ_IN_NEW_PROCESS = (
    "lives only in the memory of the process that opened it, and this command is a new "
    "process where it is always empty; give the URL of a store on disk or on a server"
)
LOST_AT_EXIT = (
    "lives only in this command's memory: everything copied there would be lost when it "
    "exits; copy to a store that outlives it (file://, sqlite:///, postgresql://, s3://)"
)


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower()


def _process_local(url: str) -> bool:
    """Whether ``url`` names a store that exists only inside one process's memory."""
    scheme = _scheme(url)
    if scheme == "memory":
        return True
    if scheme != "sqlite":
        return False
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return False  # check_existing_sqlite says what is wrong with it
    database = parsed.database or ""
    return database in ("", ":memory:") or parsed.query.get("mode") == "memory"


def refuse_process_local(url: str, why: str) -> None:
    if _process_local(url):
        raise InvalidArgument(f"{mask_url(url)} {why}")


def _check_existing_directory(url: str) -> None:
    """Refuse a local object store whose directory is missing (reads never create it)."""
    if _scheme(url) not in _LOCAL_SCHEMES:
        return
    from fsspec.core import url_to_fs

    root = str(url_to_fs(url)[1])
    if not _local_path(root).is_dir():
        raise InvalidArgument(
            f"no store directory at {_shown_path(root)}; check the URL (reading never creates one)"
        )


#: A path longer than this is shown cut in messages: one line, not 100 kB of it.
_SHOWN_PATH_CHARS = 120


def _shown_path(path: str) -> str:
    shown = path if len(path) <= _SHOWN_PATH_CHARS else path[:_SHOWN_PATH_CHARS] + "..."
    return repr(shown)


def _local_path(path: str) -> Path:
    """``path``, once the operating system agrees it can name a file (else one clear error)."""
    try:
        Path(path).exists()
    except (OSError, ValueError) as exc:  # too long, a NUL byte, ...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidArgument(
            f"cannot use the path {_shown_path(path)}: {reason}; check the URL"
        ) from None
    return Path(path)


def check_existing_sqlite(url: str) -> None:
    if url.startswith("sqlite"):
        try:
            database = sa.make_url(url).database
        except (sa.exc.ArgumentError, ValueError):
            raise InvalidArgument(
                f"{mask_url(url)} is not a store URL; use e.g. sqlite:///path/state.db"
            ) from None
        if database and database != ":memory:" and not _local_path(database).exists():
            raise InvalidArgument(f"no SQLite database at {_shown_path(database)}; check the URL")


def _open_local_or_server(url: str) -> Backend:
    if _scheme(url) in SQL_SCHEMES:
        return open_backend(url, create=False)  # never create tables to read them
    _check_existing_directory(url)  # opening a local store creates its directory: not here
    return open_backend(url)
