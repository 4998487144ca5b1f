"""Where a test's data lives, and a raw view of every stored byte there.

Shared by the quota and migration tests, which both prove that a refused or
repeated operation leaves storage byte-for-byte as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

SQL_KINDS = ("sqlite", "postgresql")
_P = TypeVar("_P", bound="Place")


def throwaway_engine(url: str) -> sa.Engine:
    """A throw-away engine (no pool) for reading or changing tables behind the library."""
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def sql_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """SELECT * of every gotstate_persist_* table, ordered by all columns."""
    found = throwaway_engine(url)
    try:
        with found.connect() as conn:
            inspector = sa.inspect(conn)
            dump = {}
            for table in sorted(inspector.get_table_names()):
                if not table.startswith("gotstate_persist"):
                    continue
                width = len(inspector.get_columns(table))
                order = ", ".join(str(column) for column in range(1, width + 1))
                rows = conn.exec_driver_sql(f'SELECT * FROM "{table}" ORDER BY {order}')
                dump[table] = [
                    tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows
                ]
            return dump
    finally:
        found.dispose()


@dataclass
class Place:
    """One storage location: its URL, backend options and a raw view of everything in it."""

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def snapshot(self) -> Any:
        """Every stored byte: all rows of every gotstate_persist_* table, or every
        file (directories too, as None) or object."""
        if self.kind in SQL_KINDS:
            return sql_dump(self.url)
        if self.kind == "file":
            assert self.root is not None
            return [
                (
                    path.relative_to(self.root).as_posix(),
                    None if path.is_dir() else path.read_bytes(),
                )
                for path in sorted(self.root.rglob("*"))
            ]
        import fsspec

        fs = fsspec.filesystem(
            "s3", skip_instance_cache=True, use_listings_cache=False, **self.options
        )
        return [(name, fs.cat_file(name)) for name in sorted(fs.find(self.url))]


def make_place(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    *,
    database: str,
    cls: type[_P],
) -> _P:
    """A fresh ``kind`` location for one test (PostgreSQL and S3 from their fixtures)."""
    if kind == "sqlite":
        return cls(kind, f"sqlite:///{tmp_path / database}")
    if kind == "postgresql":
        return cls(kind, request.getfixturevalue("pg_url"))
    if kind == "file":
        root = tmp_path / "objects"
        return cls(kind, f"file://{root}", root=root)
    # "s3": a new S3 store (object layout 2); "s3-layout1": one an earlier release made
    url, options = request.getfixturevalue("s3_url" if kind == "s3" else "s3_layout1_url")
    return cls(kind, url, dict(options))
