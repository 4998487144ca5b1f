"""The SQL text the SQL backend runs, written once and built from the table description.

Why a module of its own: every statement the backend issues is fixed text,
so it is written here once, with its table and column names taken from
:mod:`._sql_tables` (the one description of the current schema, which a test
compares with a database upgraded through every alembic revision), and turned
into each database's dialect and driver placeholder style once per backend,
not once per call. Values are always bound, never formatted into the text.

The quota check is SQL too: the conditional update of a namespace's counters
(``_WITHIN_LIMITS``) *is* the check, so concurrent writers cannot overshoot;
``quota.check_write`` states the same rules in Python, to explain a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.base import SQLiteIdentifierPreparer
from sqlalchemy.sql.compiler import RESERVED_WORDS

from ..errors import InvalidArgument
from ._sql_tables import keys, meta, namespaces, records

__all__ = ["QUOTA_FIELDS", "Statements"]

#: Names written in double quotes: words SQL or SQLite reserve (of ours, only ``key``).
_RESERVED = frozenset(RESERVED_WORDS) | frozenset(SQLiteIdentifierPreparer.reserved_words)


class _Names:
    """One table's name (``str()``) and its columns' names (attributes), as statements write them.

    A column the table does not describe is an ``AttributeError`` when this
    module is imported, so no statement can name a column the schema lacks.
    """

    __slots__ = ("_table",)

    def __init__(self, table: sa.Table) -> None:
        self._table = table

    def __str__(self) -> str:
        return self._table.name

    def __getattr__(self, column: str) -> str:
        try:
            name = self._table.c[column].name
        except KeyError:
            raise AttributeError(f"table {self._table.name} has no column {column!r}") from None
        return f'"{name}"' if name in _RESERVED else name


_R = _Names(records)
_K = _Names(keys)
_N = _Names(namespaces)
_M = _Names(meta)

#: Quota fields, stored one column each (NULL: no limit), in Quota's order.
QUOTA_FIELDS = (
    "max_bytes",
    "max_records",
    "max_keys",
    "max_blob_bytes",
    "max_versions_per_key",
    "retention",
    "max_writes_per_second",
    "max_reads_per_second",
)
_QUOTA_COLUMNS = ", ".join(getattr(_N, name) for name in QUOTA_FIELDS)
_COUNTERS = f"{_N.bytes}, {_N.records}, {_N.keys}"
_NAMESPACE_ROW = f"{_N.namespace} = :ns"
_RECORD_KEY = f"{_R.namespace} = :ns AND {_R.key} = :key"
_KEY_ROW = f"{_K.namespace} = :ns AND {_K.key} = :key"
_RECORD_ROW = f"{_RECORD_KEY} AND {_R.version} = :version"

# What one write adds to its namespace's counters, and the condition that keeps
# the result within every limit: the conditional update *is* the check, so
# concurrent writers cannot overshoot. :grow is bytes added (net of pruning),
# :more records added, :new_key 1 if the key had no stored version,
# :key_versions what the key holds afterwards; :add_bytes and :add_records
# are what the counters take now (the same, unless a catalog prunes later).
_CHARGE = (
    f"{_N.bytes} = {_N.bytes} + :add_bytes, {_N.records} = {_N.records} + :add_records, "
    f"{_N.keys} = {_N.keys} + :new_key"
)
# A limit binds only a write that needs more of it (quota.check_write says the
# same): after a limit was lowered below usage, a write that prunes as much as
# it adds, or adds to an existing key, is not refused by that limit.
#
# Every limit is read as "limit + 0": on SQLite, whose columns take any type, a
# limit overwritten with text would otherwise compare greater than every number
# and silently lift the limit; as a number (0) it refuses the write, and the
# refusal's explanation (quota_of) reports the damaged quota.
_WITHIN_LIMITS = (
    f"({_N.max_blob_bytes} IS NULL OR :size <= {_N.max_blob_bytes} + 0) "
    f"AND ({_N.max_bytes} IS NULL OR :grow <= 0 OR {_N.bytes} + :grow <= {_N.max_bytes} + 0) "
    f"AND ({_N.max_records} IS NULL OR :more <= 0 "
    f"OR {_N.records} + :more <= {_N.max_records} + 0) "
    f"AND ({_N.max_keys} IS NULL OR :new_key = 0 OR {_N.keys} + :new_key <= {_N.max_keys} + 0) "
    f"AND ({_N.max_versions_per_key} IS NULL "
    f"OR :key_versions <= {_N.max_versions_per_key} + 0)"
)
# The compare-and-set on the key's bookkeeping row that every append makes.
_BUMP = (
    f"UPDATE {_K} SET {_K.last_version} = :version, {_K.newest} = :version, {_K.kind} = :kind, "
    f"{_K.versions} = {_K.versions} + 1 WHERE {_KEY_ROW} "
    f"AND {_K.last_version} < :version AND ({_K.newest} = 0 OR {_K.kind} = :kind)"
)
_EXPECTED = f" AND {_K.newest} = :expected"
# PostgreSQL's single-statement append (nothing to prune): the bump's RETURNING
# feeds the charge, and the blob is inserted only if the charge happened;
# otherwise the blob is NULL, the NOT NULL constraint aborts the whole
# statement (bump included), and the transactional path decides and explains.
_NEW_KEY_OF_BUMP = f"(SELECT CASE WHEN {_K.versions} = 1 THEN 1 ELSE 0 END FROM bump)"
_RECORD_COLUMNS = (
    f"{_R.namespace}, {_R.key}, {_R.version}, {_R.kind}, {_R.format_version}, {_R.size}, "
    f"{_R.created_at_us}, {_R.blob}"
)


def _append_one(expected: str) -> str:
    charge = (
        _CHARGE.replace(":add_bytes", ":size")
        .replace(":add_records", "1")
        .replace(":new_key", _NEW_KEY_OF_BUMP)
    )
    within = (
        _WITHIN_LIMITS.replace(":grow", ":size")
        .replace(":more", "1")
        .replace(":new_key", _NEW_KEY_OF_BUMP)
        .replace(":key_versions", f"(SELECT {_K.versions} FROM bump)")
    )
    return (
        f"WITH bump AS ({_BUMP}{expected} RETURNING {_K.versions}), "
        f"charge AS (UPDATE {_N} SET {charge} WHERE {_NAMESPACE_ROW} "
        f"AND EXISTS (SELECT 1 FROM bump) AND {within} RETURNING 1) "
        f"INSERT INTO {_R} ({_RECORD_COLUMNS}) SELECT :ns, :key, :version, :kind, "
        ":format_version, :size, :created_at_us, "
        "CASE WHEN EXISTS (SELECT 1 FROM charge) THEN :blob END FROM bump"
    )


# PostgreSQL's single-statement append that also prunes (Writes.append_in_one,
# for namespaces whose retention may prune). All its parts read the snapshot
# the statement started with; what another session committed since then
# reaches it only through the rows it updates or deletes, which PostgreSQL
# re-reads at their newest. So:
# - ``cur`` reads the key's stored count (``held``) and the namespace's
#   retention, hence how many of the oldest versions go (``prune``);
# - the bump is the compare-and-set of ``_BUMP`` and also on ``held``: an
#   append committed since moved ``last_version``, a delete changed
#   ``versions``; either way the bump matches nothing and nothing happens.
#   It sets ``versions`` to what the key keeps, pruning included;
# - holding the key's row, it deletes the stored versions older than the
#   (prune + 1)-th oldest (all of them if there is none): no append or delete
#   of the key can run meanwhile (both take that row first), and a rewrite
#   (migrate, reseal) committed since gives its new size to RETURNING;
# - the charge nets out exactly what was deleted, within every limit, and
#   only if the bump happened, the deletion removed as many versions as
#   planned and the namespace's retention is still the one ``cur`` read (a
#   quota changed since fails it). Otherwise the NULL blob aborts the whole
#   statement, deletions included, and the transactional path decides.
# A reader of an old version sees it or not as its own snapshot says; the
# newest version is never pruned (max_versions_per_key >= 1).
_FREED_BYTES = "(:size - (SELECT freed_bytes FROM freed))"
_FREED_RECORDS = "(1 - (SELECT pruned FROM freed))"
_NEW_KEY_OF_CUR = "(SELECT CASE WHEN held = 0 THEN 1 ELSE 0 END FROM cur)"


def _append_pruning(expected: str) -> str:
    bump = _BUMP.replace(
        f"{_K.versions} = {_K.versions} + 1",
        f"{_K.versions} = {_K.versions} + 1 - (SELECT prune FROM cur)",
    )
    charge = (
        _CHARGE.replace(":add_bytes", _FREED_BYTES)
        .replace(":add_records", _FREED_RECORDS)
        .replace(":new_key", _NEW_KEY_OF_CUR)
    )
    within = (
        _WITHIN_LIMITS.replace(":grow", _FREED_BYTES)
        .replace(":more", _FREED_RECORDS)
        .replace(":new_key", _NEW_KEY_OF_CUR)
        .replace(":key_versions", f"(SELECT {_K.versions} FROM bump)")
    )
    most, policy = f"n.{_N.max_versions_per_key}", f"n.{_N.retention}"
    return (
        f"WITH cur AS (SELECT k.{_K.versions} AS held, {most} AS most, {policy} AS policy, "
        f"CASE WHEN {policy} = 'prune-oldest' AND {most} IS NOT NULL "
        f"THEN GREATEST(0, k.{_K.versions} + 1 - {most}) ELSE 0 END AS prune "
        f"FROM {_K} k JOIN {_N} n ON n.{_N.namespace} = k.{_K.namespace} "
        f"WHERE k.{_K.namespace} = :ns AND k.{_K.key} = :key), "
        f"bump AS ({bump}{expected} AND {_K.versions} = (SELECT held FROM cur) "
        f"RETURNING {_K.versions}), "
        f"doomed AS (DELETE FROM {_R} WHERE {_RECORD_KEY}{_STORED} AND {_R.version} < "
        f"COALESCE((SELECT {_R.version} FROM {_R} WHERE {_RECORD_KEY}{_STORED} "
        f"ORDER BY {_R.version} OFFSET COALESCE((SELECT cur.prune FROM cur, bump), 0) LIMIT 1), "
        f":version) RETURNING {_R.size}), "
        f"freed AS (SELECT COUNT(*) AS pruned, "
        f"CAST(COALESCE(SUM({_R.size}), 0) AS BIGINT) AS freed_bytes FROM doomed), "
        f"charge AS (UPDATE {_N} SET {charge} WHERE {_NAMESPACE_ROW} "
        f"AND EXISTS (SELECT 1 FROM bump) AND (SELECT pruned FROM freed) = "
        f"(SELECT prune FROM cur) AND {_N.max_versions_per_key} IS NOT DISTINCT FROM "
        f"(SELECT most FROM cur) AND {_N.retention} = (SELECT policy FROM cur) "
        f"AND {within} RETURNING 1) "
        f"INSERT INTO {_R} ({_RECORD_COLUMNS}) SELECT :ns, :key, :version, :kind, "
        ":format_version, :size, :created_at_us, "
        "CASE WHEN EXISTS (SELECT 1 FROM charge) THEN :blob END FROM bump"
    )


_INFO = (
    f"SELECT {_R.key}, {_R.version}, {_R.kind}, {_R.format_version}, {_R.size}, {_R.created_at_us}"
)
# Rows a reader may see: a catalog's reservation (a blob still being written
# to the object store) is counted in usage but not listed or read.
_STORED = f" AND {_R.reserved_at_us} IS NULL"
# Where keys and namespaces are compared or sorted. Replaced by the dialect's
# byte-order collation (nothing on SQLite, whose default is already binary).
_BYTES = " <byte-order>"
# Where a write locks the key's bookkeeping row (nothing on SQLite, whose
# BEGIN IMMEDIATE already holds the database's write lock).
_LOCK = " <lock-row>"
_HEAD = f"SELECT {_K.last_version}, {_K.newest}, {_K.kind} FROM {_K} WHERE {_KEY_ROW}"
_LIMITS = f"SELECT {_COUNTERS}, {_QUOTA_COLUMNS} FROM {_N} WHERE {_NAMESPACE_ROW}"
_RESERVED_ROW = f"{_R.reserved_at_us} IS NOT NULL"
_ANNOUNCED = f"{_R.pending_token} = :pending"
_SWAP = (
    f"UPDATE {_R} SET {_R.blob} = :blob, {_R.size} = :size, "
    f"{_R.format_version} = :format_version WHERE {_RECORD_ROW} "
    f"AND {_R.blob} = :expected{_STORED}"
)
_STATEMENTS = {
    "head": _HEAD,
    "bump": f"{_BUMP} RETURNING {_K.versions}",
    "bump_expected": f"{_BUMP}{_EXPECTED} RETURNING {_K.versions}",
    # PostgreSQL only (SQLite has no data-modifying CTEs): the bump, the usage
    # charge and the insert as one atomic statement, see Writes.append_in_one;
    # the "pruning" pair deletes what retention prunes in it too.
    "append_one": _append_one(""),
    "append_one_expected": _append_one(_EXPECTED),
    "append_pruning": _append_pruning(""),
    "append_pruning_expected": _append_pruning(_EXPECTED),
    "new_key": (
        f"INSERT INTO {_K} ({_K.namespace}, {_K.key}, {_K.last_version}, {_K.newest}, "
        f"{_K.kind}, {_K.versions}) VALUES (:ns, :key, :version, :version, :kind, 1)"
    ),
    "retention": (
        f"SELECT {_N.max_versions_per_key}, {_N.retention} FROM {_N} WHERE {_NAMESPACE_ROW}{_LOCK}"
    ),
    "new_namespace": (
        f"INSERT INTO {_N} ({_N.namespace}) VALUES (:ns) ON CONFLICT ({_N.namespace}) DO NOTHING"
    ),
    "charge": f"UPDATE {_N} SET {_CHARGE} WHERE {_NAMESPACE_ROW} AND {_WITHIN_LIMITS}",
    # The common case in one statement: nothing for retention to prune.
    "charge_unpruned": (
        f"UPDATE {_N} SET {_CHARGE} WHERE {_NAMESPACE_ROW} AND {_WITHIN_LIMITS} "
        f"AND NOT ({_N.retention} = 'prune-oldest' AND {_N.max_versions_per_key} IS NOT NULL "
        f"AND :key_versions > {_N.max_versions_per_key})"
    ),
    "prune": (
        f"DELETE FROM {_R} WHERE {_RECORD_KEY} AND {_R.version} IN "
        f"(SELECT {_R.version} FROM {_R} WHERE {_RECORD_KEY}{_STORED} "
        f"ORDER BY {_R.version} LIMIT :count) "
        f"RETURNING {_R.version}, {_R.size}, {_R.format_version}, {_R.object_token}"
    ),
    "oldest": (
        f"SELECT {_R.version}, {_R.size}, {_R.format_version} FROM {_R} "
        f"WHERE {_RECORD_KEY}{_STORED} ORDER BY {_R.version} LIMIT :count"
    ),
    "reserved_versions": f"SELECT {_R.version} FROM {_R} WHERE {_RECORD_KEY} AND {_RESERVED_ROW}",
    "key_versions": f"SELECT {_K.versions} FROM {_K} WHERE {_KEY_ROW}",
    # Keyset pagination in the primary key's own order (any stable order will do
    # for a walk, and this one is an index range scan on every database).
    "page": (
        f"{_INFO}, {_R.blob} FROM {_R} WHERE {_R.namespace} = :ns{_STORED} "
        f"AND ({_R.key}, {_R.version}) > (:key, :version) "
        f"ORDER BY {_R.key}, {_R.version} LIMIT :limit"
    ),
    "row_size": f"SELECT {_R.size} FROM {_R} WHERE {_RECORD_ROW}{_STORED}",
    "swap_returning": f"{_SWAP} RETURNING {_R.version}",
    "swap": _SWAP,
    "newest_stored": (
        f"SELECT {_R.version}, {_R.kind} FROM {_R} WHERE {_RECORD_KEY}{_STORED} "
        f"ORDER BY {_R.version} DESC LIMIT 1"
    ),
    "known_namespaces": (
        f"SELECT {_N.namespace}{_BYTES} FROM {_N} "
        f"UNION SELECT {_R.namespace}{_BYTES} FROM {_R} ORDER BY 1"
    ),
    "pruned": f"UPDATE {_K} SET {_K.versions} = {_K.versions} - :count WHERE {_KEY_ROW}",
    "release": (
        f"UPDATE {_N} SET {_N.bytes} = {_N.bytes} - :bytes, "
        f"{_N.records} = {_N.records} - :records, "
        f"{_N.keys} = {_N.keys} - :keys WHERE {_NAMESPACE_ROW}"
    ),
    "counters": f"SELECT {_COUNTERS} FROM {_N} WHERE {_NAMESPACE_ROW}",
    "set_counters": (
        f"UPDATE {_N} SET {_N.bytes} = :bytes, {_N.records} = :records, {_N.keys} = :keys "
        f"WHERE {_NAMESPACE_ROW}"
    ),
    "recount_keys": (
        f"UPDATE {_K} SET {_K.versions} = (SELECT COUNT(*) FROM {_R} r "
        f"WHERE r.{_R.namespace} = {_K}.{_K.namespace} AND r.{_R.key} = {_K}.{_K.key}) "
        f"WHERE {_K.namespace} = :ns"
    ),
    "limits": f"{_LIMITS}{_LOCK}",
    "quota": _LIMITS,
    "set_limits": (
        f"UPDATE {_N} SET "
        + ", ".join(f"{getattr(_N, name)} = :{name}" for name in QUOTA_FIELDS)
        + f" WHERE {_NAMESPACE_ROW}"
    ),
    "insert": (
        f"INSERT INTO {_R} ({_RECORD_COLUMNS}, {_R.reserved_at_us}) VALUES (:ns, :key, "
        ":version, :kind, :format_version, :size, :created_at_us, :blob, :reserved_at_us)"
    ),
    "newest": (
        f"{_INFO}, {_R.blob} FROM {_R} WHERE {_RECORD_KEY}{_STORED} "
        f"ORDER BY {_R.version} DESC LIMIT 1"
    ),
    "one": f"{_INFO}, {_R.blob} FROM {_R} WHERE {_RECORD_ROW}{_STORED}",
    "versions": f"{_INFO} FROM {_R} WHERE {_RECORD_KEY}{_STORED} ORDER BY {_R.version}",
    # A catalog's reservations (see CatalogRows.reserve).
    "confirm": (
        f"UPDATE {_R} SET {_R.reserved_at_us} = NULL WHERE {_RECORD_ROW} AND {_RESERVED_ROW}"
    ),
    "stale": (
        f"SELECT {_R.key}, {_R.version}, {_R.format_version} FROM {_R} "
        f"WHERE {_R.namespace} = :ns AND {_RESERVED_ROW} AND {_R.reserved_at_us} < :cutoff"
    ),
    "rows": (
        f"SELECT {_R.key}, {_R.version}, {_R.format_version}, {_R.object_token}, "
        f"{_R.pending_token} FROM {_R} WHERE {_R.namespace} = :ns"
    ),
    # A catalog's rewrites (see CatalogRows.announce): announced before the new
    # object exists, switched to it by compare-and-set on the announcement.
    "catalog_newest": (
        f"{_INFO}, {_R.object_token} FROM {_R} WHERE {_RECORD_KEY}{_STORED} "
        f"ORDER BY {_R.version} DESC LIMIT 1"
    ),
    "catalog_one": f"{_INFO}, {_R.object_token} FROM {_R} WHERE {_RECORD_ROW}{_STORED}",
    "announce": (
        f"UPDATE {_R} SET {_R.pending_token} = :pending, {_R.pending_at_us} = :now "
        f"WHERE {_RECORD_ROW} AND {_R.format_version} = :format_version "
        f"AND COALESCE({_R.object_token}, 0) = :token "
        f"AND ({_R.pending_token} IS NULL OR {_R.pending_at_us} < :cutoff){_STORED}"
    ),
    "announced_size": f"SELECT {_R.size} FROM {_R} WHERE {_RECORD_ROW} AND {_ANNOUNCED}{_STORED}",
    "switch": (
        f"UPDATE {_R} SET {_R.format_version} = :format_version, {_R.object_token} = :pending, "
        f"{_R.size} = :size, {_R.pending_token} = NULL, {_R.pending_at_us} = NULL "
        f"WHERE {_RECORD_ROW} AND {_ANNOUNCED}"
    ),
    "unannounce": (
        f"UPDATE {_R} SET {_R.pending_token} = NULL, {_R.pending_at_us} = NULL "
        f"WHERE {_RECORD_ROW} AND {_ANNOUNCED}"
    ),
    "touch": f"UPDATE {_N} SET {_N.bytes} = {_N.bytes} WHERE {_NAMESPACE_ROW}",
    "meta_get": f"SELECT {_M.value} FROM {_M} WHERE {_M.name} = :name",
    "meta_put": (
        f"INSERT INTO {_M} ({_M.name}, {_M.value}) VALUES (:name, :value) "
        f"ON CONFLICT ({_M.name}) DO NOTHING"
    ),
    "last_versions": f"SELECT {_K.key}, {_K.last_version} FROM {_K} WHERE {_K.namespace} = :ns",
    "stale_announcements": (
        f"SELECT {_R.key}, {_R.version}, {_R.pending_token} FROM {_R} "
        f"WHERE {_R.namespace} = :ns AND {_R.pending_token} IS NOT NULL "
        f"AND {_R.pending_at_us} < :cutoff"
    ),
    "head_locked": f"{_HEAD}{_LOCK}",
    "keys": (
        f"SELECT DISTINCT {_R.key}{_BYTES} FROM {_R} WHERE {_R.namespace} = :ns{_STORED} "
        f"ORDER BY {_R.key}{_BYTES}"
    ),
    # A range on the primary key instead of LIKE: LIKE is case-insensitive on
    # SQLite and would need escaping of % and _.
    "keys_prefix": (
        f"SELECT DISTINCT {_R.key}{_BYTES} FROM {_R} WHERE {_R.namespace} = :ns{_STORED} "
        f"AND {_R.key}{_BYTES} >= :prefix AND substr({_R.key}, 1, :length) = :prefix "
        f"ORDER BY {_R.key}{_BYTES}"
    ),
    "namespaces": (
        f"SELECT DISTINCT {_R.namespace}{_BYTES} FROM {_R} WHERE {_R.reserved_at_us} IS NULL "
        f"ORDER BY {_R.namespace}{_BYTES}"
    ),
    "delete_one": f"DELETE FROM {_R} WHERE {_RECORD_ROW}",
    "set_newest": (
        f"UPDATE {_K} SET {_K.newest} = :newest, {_K.kind} = :kind, {_K.versions} = :versions "
        f"WHERE {_KEY_ROW}"
    ),
    # Locks the key's record rows (PostgreSQL): a delete that read them
    # unlocked could release the size a concurrent switch just replaced, or
    # withdraw a reservation a concurrent confirm just made readable.
    "stored_sizes": (
        f"SELECT {_R.version}, {_R.size}, {_R.format_version}, {_R.object_token} FROM {_R} "
        f"WHERE {_RECORD_KEY}{_LOCK}"
    ),
    # A system key is no key for the counters (_quota_rules): its first character
    # is compared with the bound marker, never a range, whatever the collation.
    "usage": (
        f"SELECT COALESCE(SUM({_R.size}), 0), COUNT(*), COUNT(DISTINCT CASE WHEN "
        f"substr({_R.key}, 1, 1) = :marker THEN NULL ELSE {_R.key} END) FROM {_R} "
        f"WHERE {_R.namespace} = :ns"
    ),
}


# Dialect name -> (byte-order collation clause, row lock clause).
_DIALECT_CLAUSES: Mapping[str, tuple[str, str]] = {
    "sqlite": ("", ""),
    "postgresql": (' COLLATE "C"', " FOR UPDATE"),
}


def _for_dialect(sql: str, dialect: str) -> str:
    """Fill in the dialect-specific clauses of one of the statements above."""
    collate, lock = _DIALECT_CLAUSES.get(dialect, ("", " FOR UPDATE"))
    return sql.replace(_BYTES, collate).replace(_LOCK, lock)


def _render(sql: str, paramstyle: str, *, is_sqlite: bool) -> str:
    """Adapt ``:name`` placeholders to the driver's style (psycopg wants %(name)s)."""
    if is_sqlite or paramstyle == "named":  # sqlite3 accepts :name whatever it advertises
        return sql
    if paramstyle == "pyformat":
        return re.sub(r":(\w+)", r"%(\1)s", sql)
    raise InvalidArgument(f"database drivers with paramstyle {paramstyle!r} are not supported")


def _positional(sql: str, order: tuple[str, ...], paramstyle: str) -> str:
    """``sql`` with its ``:name`` placeholders, which must appear in ``order``, made positional."""
    found = tuple(re.findall(r":(\w+)", sql))
    if found != order:  # pragma: no cover - a programming error caught by any test run
        raise AssertionError(f"placeholders {found} are not in the order {order}")
    mark = "%s" if paramstyle in ("pyformat", "format") else "?"
    return re.sub(r":\w+", lambda _m: mark, sql)


class Statements:
    """Every statement in one database's dialect and its driver's placeholder style.

    ``statements["name"]`` binds by name; the hottest reads are also
    positional (cheaper to bind): ``newest`` and ``head`` take
    ``(namespace, key)``, ``one`` takes ``(namespace, key, version)``.
    Raises ``InvalidArgument`` for a driver whose placeholder style is not
    supported.
    """

    __slots__ = ("_named", "head", "newest", "one")

    def __init__(self, dialect: sa.Dialect) -> None:
        is_sqlite = dialect.name == "sqlite"
        self._named = {
            name: _render(_for_dialect(sql, dialect.name), dialect.paramstyle, is_sqlite=is_sqlite)
            for name, sql in _STATEMENTS.items()
        }
        # The hottest statements also in positional form (cheaper to bind).
        self.newest = _positional(_STATEMENTS["newest"], ("ns", "key"), dialect.paramstyle)
        self.one = _positional(_STATEMENTS["one"], ("ns", "key", "version"), dialect.paramstyle)
        self.head = _positional(_STATEMENTS["head"], ("ns", "key"), dialect.paramstyle)

    def __getitem__(self, name: str) -> str:
        return self._named[name]
