"""The one description of the SQL backend's current schema, as SQLAlchemy Core tables.

These describe the schema at the newest alembic revision. Every statement the
backend runs takes its table and column names from them (``_sql_statements``),
and tests compare them with a database upgraded through every revision
(tests/test_sql_tables.py, and alembic's model check in
tests/test_migrations.py). Tables are created and changed exclusively by the
alembic revisions in ``gotstate_persist/migrations/versions``, never with
``metadata.create_all()``: a schema change is a new revision there and a
change here, in the same commit.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, text

NAME_LENGTH = 255
KIND_LENGTH = 64

metadata = MetaData()

records = Table(
    "gotstate_persist_records",
    metadata,
    Column("namespace", String(NAME_LENGTH), primary_key=True),
    Column("key", String(NAME_LENGTH), primary_key=True),
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(KIND_LENGTH), nullable=False),
    Column("format_version", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("blob", LargeBinary, nullable=False),
    # Set while a catalog's blob is being written to its object store (the
    # row reserves the version and its usage); NULL for every readable row.
    Column("reserved_at_us", BigInteger, nullable=True),
    # A catalog's object names (backends.catalog): the token that makes a
    # rewritten object's name unique (NULL: named by version and format), and
    # the announced token of a rewrite in progress, with when it started.
    Column("object_token", BigInteger, nullable=True),
    Column("pending_token", BigInteger, nullable=True),
    Column("pending_at_us", BigInteger, nullable=True),
)

# One row per key ever written. It outlives deletes so that version numbers
# are never reused, and its conditional update is the compare-and-set that
# serialises concurrent appends on databases without serial transactions.
keys = Table(
    "gotstate_persist_keys",
    metadata,
    Column("namespace", String(NAME_LENGTH), primary_key=True),
    Column("key", String(NAME_LENGTH), primary_key=True),
    Column("last_version", BigInteger, nullable=False),
    Column("newest", BigInteger, nullable=False),
    Column("kind", String(KIND_LENGTH), nullable=True),
    # Stored versions of the key: what max_versions_per_key and the keys
    # counter of its namespace are checked against.
    Column("versions", BigInteger, nullable=False, server_default=text("0")),
)

# Facts about the database itself: ``catalog_id``, its identity as the catalog
# of an object store (recorded in that store's layout marker).
meta = Table(
    "gotstate_persist_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(NAME_LENGTH), nullable=False),
)

# One row per namespace ever written: usage counters kept in the same
# transaction as every write, and the namespace's quota (NULL: no limit).
namespaces = Table(
    "gotstate_persist_namespaces",
    metadata,
    Column("namespace", String(NAME_LENGTH), primary_key=True),
    Column("bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("records", BigInteger, nullable=False, server_default=text("0")),
    Column("keys", BigInteger, nullable=False, server_default=text("0")),
    Column("max_bytes", BigInteger, nullable=True),
    Column("max_records", BigInteger, nullable=True),
    Column("max_keys", BigInteger, nullable=True),
    Column("max_blob_bytes", BigInteger, nullable=True),
    Column("max_versions_per_key", BigInteger, nullable=True),
    Column("retention", String(16), nullable=False, server_default="reject"),
    Column("max_writes_per_second", BigInteger, nullable=True),
    Column("max_reads_per_second", BigInteger, nullable=True),
)
