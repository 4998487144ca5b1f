"""System keys: the library's own records in a namespace, on every backend.

A service below ``Store`` (the extension registry first, configuration and the
journal later) keeps its records as ordinary sealed, versioned records under
keys no user can name (``_names.system_key``). Here each backend the suite
provides (SQLite, PostgreSQL, local files, fsspec memory, S3 on moto, an object
store with a SQL catalog, and the example dbm plugin) is driven through the
record pipeline and the public API to show that such records round-trip, stay
out of users' listings and of other namespaces, count toward ``max_bytes`` and
``max_records`` but never toward ``max_keys`` or ``max_versions_per_key``, are
never pruned by retention, keep the usage counters exact, and are still
copied, verified, shown, migrated and resealed like every record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import msgspec
import pytest
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist._copy import copy_records
from gotstate_persist._names import (
    SYSTEM_KEY_PREFIX,
    check_name,
    check_stored_key,
    is_system_key,
    split_system_key,
    system_area_prefix,
    system_key,
)
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.backends import Backend, KeyHead, Usage, VersionInfo, open_backend
from gotstate_persist.cli import main
from gotstate_persist.quota import QuotaBackend

NS = "orders"
KIND = "test.registration"
EXT = system_key("ext", "throttle")
OTHER_EXT = system_key("ext", "audit")
#: Backends the command line can open (memory:// lives in one process; the
#: moto S3 server needs options a command line does not carry).
CLI_KINDS = ("sqlite", "postgresql", "file", "catalog", "dbm")
ALL_KINDS = (*CLI_KINDS, "memory", "s3")


class Registration(msgspec.Struct, frozen=True):
    name: str
    revision: int


class RegistrationV2(msgspec.Struct, frozen=True):
    name: str
    revision: int
    status: str


def _add_status(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "status": "registered"}


def formats(*, newest: int = 1) -> gp.FormatRegistry:
    registry = gp.FormatRegistry()
    registry.register(Registration, kind=KIND, version=1)
    if newest == 2:
        registry.register(RegistrationV2, kind=KIND, version=2, upcast=_add_status)
    return registry


# Where the data lives.


@dataclass
class Where:
    """One backend under test: how to open it, and how the command line reaches it."""

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    cli: list[str] = field(default_factory=list)

    def needs(self, what: str) -> None:
        """Skip where the backend lacks an optional part of the contract (the dbm example)."""
        if self.kind == "dbm":
            pytest.skip(f"the example dbm backend does not implement {what}")

    def open(self, keyring: gp.KeyRing, *, namespace: str = NS, **kw: Any) -> gp.Store:
        kw.setdefault("formats", formats())
        return gp.open_store(self.url, namespace=namespace, keyring=keyring, **self.options, **kw)


def _where(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        yield Where(kind, url, cli=[url])
    elif kind == "postgresql":
        url = request.getfixturevalue("pg_url")
        yield Where(kind, url, cli=[url])
    elif kind == "file":
        url = f"file://{tmp_path / 'objects'}"
        yield Where(kind, url, cli=[url])
    elif kind == "catalog":
        url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'catalog.db'}"
        yield Where(kind, url, {"catalog": catalog}, cli=[url, "--catalog", catalog])
    elif kind == "dbm":
        url = f"dbm://{tmp_path / 'state'}"
        yield Where(kind, url, cli=[url])
    elif kind == "s3":
        url, options = request.getfixturevalue("s3_url")
        yield Where(kind, url, dict(options))
    else:
        root = f"memory://system-keys-{uuid.uuid4().hex}"
        try:
            yield Where(kind, root)
        finally:
            memory = fsspec.filesystem("memory")
            if memory.exists(root):
                memory.rm(root, recursive=True)


@pytest.fixture(params=ALL_KINDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    yield from _where(request.param, request, tmp_path)


@pytest.fixture(params=CLI_KINDS)
def cli_where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    yield from _where(request.param, request, tmp_path)


@pytest.fixture
def keys_file(keyring: gp.KeyRing, tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(keyring.export())
    return path


def pipeline(store: gp.Store, keyring: gp.KeyRing) -> RecordPipeline:
    """A service's pipeline on the store's namespace, through the store's quota adapter."""
    return RecordPipeline(
        store.backend, keyring=keyring, namespace=store.namespace, formats=store.formats
    )


def register(pipe: RecordPipeline, key: str = EXT, revision: int = 1) -> VersionInfo:
    """Write one registration revision under ``key``, as the registry does (CAS)."""
    name = split_system_key(key)[1]
    return pipe.append(key, Registration(name, revision), expected_version=revision - 1)


def assert_exact(store: gp.Store) -> Usage:
    """The kept usage and a recount agree (no drift); return it."""
    kept = store.usage()
    counted = store.usage(recount=True)
    assert counted.drift is None, counted
    assert counted == kept
    return kept


# The names themselves.


def test_system_keys_are_built_checked_and_never_user_keys() -> None:
    assert EXT == "\x1fgotstate/ext/throttle" == SYSTEM_KEY_PREFIX + "ext/throttle"
    assert is_system_key(EXT) and not is_system_key("ext/throttle")
    assert split_system_key(EXT) == ("ext", "throttle")
    assert system_area_prefix("ext") == "\x1fgotstate/ext/"
    assert check_stored_key(EXT) == EXT and check_stored_key("order-1") == "order-1"
    with pytest.raises(gp.InvalidArgument, match="reserved"):
        check_name(EXT, "key")
    longest = system_key("ext", "n" * (255 - len(system_area_prefix("ext"))))
    assert len(longest.encode()) == 255
    for area, name in (
        ("Ext", "a"),
        ("", "a"),
        ("e/x", "a"),
        ("ext", ""),
        ("ext", "bad\x01name"),
        ("ext", "n" * (256 - len(system_area_prefix("ext")))),
    ):
        with pytest.raises(gp.InvalidArgument):
            system_key(area, name)
    for malformed in (
        "\x1f",
        "\x1fother/ext/a",
        SYSTEM_KEY_PREFIX,
        SYSTEM_KEY_PREFIX + "ext",
        SYSTEM_KEY_PREFIX + "ext/",
        SYSTEM_KEY_PREFIX + "EXT/a",
        SYSTEM_KEY_PREFIX + "ext/a\x01",
        "user\x1fkey",
    ):
        with pytest.raises(gp.InvalidArgument):
            check_stored_key(malformed)


# Round trip and visibility.


def test_a_system_key_round_trips_through_the_pipeline(where: Where, keyring: gp.KeyRing) -> None:
    with where.open(keyring) as store:
        pipe = pipeline(store, keyring)
        first = register(pipe)
        assert (first.key, first.version, first.kind) == (EXT, 1, KIND)
        assert register(pipe, revision=2).version == 2
        with pytest.raises(gp.VersionConflict):
            register(pipe, revision=2)  # stale expected_version: nothing written
        assert pipe.load(EXT)[1] == Registration("throttle", 2)
        assert pipe.load(EXT, 1)[1] == Registration("throttle", 1)
        assert [i.version for i in store.backend.versions(NS, EXT)] == [1, 2]
    with where.open(keyring) as reopened:  # persisted, and read by a new backend
        info, record = pipeline(reopened, keyring).load(EXT)
        assert (info.version, record) == (2, Registration("throttle", 2))


def test_system_keys_stay_out_of_listings_and_other_namespaces(
    where: Where, keyring: gp.KeyRing
) -> None:
    with where.open(keyring) as store:
        other = gp.Store(store.backend, keyring=keyring, namespace="other", formats=formats())
        store.save("order-1", Registration("user", 1))
        register(pipeline(store, keyring))
        assert store.keys() == ["order-1"]
        assert store.keys(prefix="order") == ["order-1"]
        # the backend lists every key: copy, verify and migrate need them
        assert store.backend.keys(NS) == sorted(["order-1", EXT])
        assert store.backend.keys(NS, system_area_prefix("ext")) == [EXT]
        assert other.keys() == []
        assert store.backend.keys("other") == []
        with pytest.raises(gp.NotFound):
            pipeline(other, keyring).load(EXT)
        assert other.usage() == Usage()


def test_users_cannot_name_a_system_key(where: Where, keyring: gp.KeyRing) -> None:
    machine = build_order_machine()
    machine.start()
    with where.open(keyring) as store:
        register(pipeline(store, keyring))
        refused: list[Callable[[], object]] = [
            lambda: store.save(OTHER_EXT, Registration("x", 1)),
            lambda: store.save(EXT, Registration("x", 1), expected_version=1),
            lambda: store.load(EXT),
            lambda: store.load(EXT, version=1),
            lambda: store.versions(EXT),
            lambda: store.delete(EXT),
            lambda: store.delete(EXT, version=1),
            lambda: store.save_machine(OTHER_EXT, machine),
            lambda: store.restore_machine(EXT, build_order_machine()),
            lambda: store.keys(prefix=SYSTEM_KEY_PREFIX),
        ]
        for call in refused:
            with pytest.raises(gp.InvalidArgument, match="reserved"):
                call()
        # nothing was written or deleted
        assert store.backend.keys(NS) == [EXT]
        assert [i.version for i in store.backend.versions(NS, EXT)] == [1]


# Quotas: bytes and records, never keys or versions per key.


@pytest.mark.parametrize("tally", [None, gp.Quota(max_records=1000)], ids=["free", "tallied"])
def test_usage_counts_system_records_but_no_key(
    where: Where, keyring: gp.KeyRing, tally: gp.Quota | None
) -> None:
    """Without a quota usage is counted; with one, non-exact backends keep a tally."""
    if tally is not None:
        where.needs("quotas")
    with where.open(keyring, quota=tally) as store:
        pipe = pipeline(store, keyring)
        user = store.save("order-1", Registration("user", 1)).size
        sizes = [register(pipe).size, register(pipe, revision=2).size]
        sizes.append(register(pipe, OTHER_EXT).size)
        assert assert_exact(store) == Usage(user + sum(sizes), 4, 1)
        assert store.backend.delete(NS, EXT) == 2  # a service removing its records
        assert assert_exact(store) == Usage(user + sizes[2], 2, 1)
        store.delete("order-1")
        assert assert_exact(store) == Usage(sizes[2], 1, 0)
        # written again after all its versions went: still no key
        again = pipe.append(EXT, Registration("throttle", 3), expected_version=0)
        assert again.version == 3
        assert assert_exact(store) == Usage(sizes[2] + again.size, 2, 0)


def test_max_keys_never_counts_a_system_key(where: Where, keyring: gp.KeyRing) -> None:
    where.needs("quotas")
    with where.open(keyring, quota=gp.Quota(max_keys=1)) as store:
        pipe = pipeline(store, keyring)
        store.save("order-1", Registration("user", 1))
        register(pipe)
        register(pipe, revision=2)
        register(pipe, OTHER_EXT)
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("order-2", Registration("user", 1))
        assert (refused.value.limit, refused.value.usage) == ("max_keys", 1)
        assert store.keys() == ["order-1"]
        assert assert_exact(store).keys == 1


def test_max_versions_per_key_never_refuses_a_system_key(where: Where, keyring: gp.KeyRing) -> None:
    where.needs("quotas")
    with where.open(keyring, quota=gp.Quota(max_versions_per_key=1)) as store:
        pipe = pipeline(store, keyring)
        store.save("order-1", Registration("user", 1))
        with pytest.raises(gp.QuotaExceeded, match="max_versions_per_key"):
            store.save("order-1", Registration("user", 2))
        for revision in (1, 2, 3):
            register(pipe, revision=revision)
        assert [i.version for i in store.backend.versions(NS, EXT)] == [1, 2, 3]
        assert assert_exact(store).records == 4


def test_retention_never_prunes_a_system_key(where: Where, keyring: gp.KeyRing) -> None:
    where.needs("quotas")
    quota = gp.Quota(max_versions_per_key=1, retention="prune-oldest")
    with where.open(keyring, quota=quota) as store:
        pipe = pipeline(store, keyring)
        for revision in (1, 2, 3):
            store.save("order-1", Registration("user", revision))
            register(pipe, revision=revision)
        assert [ref.version for ref in store.versions("order-1")] == [3]  # pruned
        assert [i.version for i in store.backend.versions(NS, EXT)] == [1, 2, 3]  # kept
        assert pipe.load(EXT, 1)[1] == Registration("throttle", 1)
        assert assert_exact(store).records == 4


@pytest.mark.parametrize("limit", ["max_records", "max_bytes"])
@pytest.mark.parametrize("target", [EXT, OTHER_EXT], ids=["next-version", "new-key"])
def test_max_records_and_max_bytes_refuse_a_system_write(
    where: Where, keyring: gp.KeyRing, limit: str, target: str
) -> None:
    where.needs("quotas")
    with where.open(keyring) as store:
        pipe = pipeline(store, keyring)
        store.save("order-1", Registration("user", 1))
        register(pipe)
        used = assert_exact(store)
        store.set_quota(gp.Quota(**{limit: getattr(used, limit.removeprefix("max_"))}))
        before = {key: store.backend.versions(NS, key) for key in (EXT, OTHER_EXT)}
        heads = {key: store.backend.head(NS, key) for key in (EXT, OTHER_EXT)}
        with pytest.raises(gp.QuotaExceeded) as refused:
            register(pipe, target, revision=2 if target == EXT else 1)
        assert refused.value.limit == limit
        # nothing written: versions, version numbers and usage as they were
        assert {key: store.backend.versions(NS, key) for key in before} == before
        assert {key: store.backend.head(NS, key) for key in heads} == heads
        assert assert_exact(store) == used
        store.set_quota(None)
        assert register(pipe, target, revision=2 if target == EXT else 1).version == (
            2 if target == EXT else 1
        )


# Services that walk every record: copy, verify, show, migrate, reseal.


def test_copy_copies_system_keys(where: Where, keyring: gp.KeyRing, tmp_path: Path) -> None:
    with where.open(keyring) as store:
        store.save("order-1", Registration("user", 1))
        register(pipeline(store, keyring))
        register(pipeline(store, keyring), revision=2)
        destination = QuotaBackend(open_backend(f"sqlite:///{tmp_path / 'copy.db'}"))
        with destination:
            report = copy_records(store.backend, destination, keyring, namespaces=[NS])
            assert (report.copied, report.skipped, report.failed) == (3, 0, [])
            copied = gp.Store(destination, keyring=keyring, namespace=NS, formats=formats())
            assert copied.keys() == ["order-1"]
            assert pipeline(copied, keyring).load(EXT)[1] == Registration("throttle", 2)
            assert [i.version for i in destination.versions(NS, EXT)] == [1, 2]
            assert copied.usage() == store.usage()


def test_cli_copy_copies_system_keys_into_another_backend(
    cli_where: Where, keyring: gp.KeyRing, keys_file: Path, tmp_path: Path
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with gp.open_store(source, namespace=NS, keyring=keyring, formats=formats()) as store:
        register(pipeline(store, keyring))
    target = [cli_where.url]
    if "catalog" in cli_where.options:
        target += ["--to-catalog", cli_where.options["catalog"]]
    assert main(["copy", source, *target, "-A", "--keys", str(keys_file)]) == 0
    with cli_where.open(keyring) as copied:
        assert pipeline(copied, keyring).load(EXT)[1] == Registration("throttle", 1)
        assert copied.keys() == [] and copied.usage().records == 1


def test_cli_ls_hides_system_keys(
    cli_where: Where, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_where.open(keyring) as store:
        register(pipeline(store, keyring))
    assert main(["ls", *cli_where.cli, "--namespace", NS]) == 0
    assert capsys.readouterr().out == "(no records)\n"
    with cli_where.open(keyring) as store:
        store.save("order-1", Registration("user", 1))
    assert main(["ls", *cli_where.cli]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[:3] for row in rows[1:]] == [[NS, "order-1", "1"]]


def test_cli_verify_checks_system_keys(
    cli_where: Where, keyring: gp.KeyRing, keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_where.open(keyring) as store:
        store.save("order-1", Registration("user", 1))
        pipe = pipeline(store, keyring)
        register(pipe)
        register(pipe, revision=2)
    verify = ["verify", *cli_where.cli, "--namespace", NS, "--keys", str(keys_file)]
    assert main(verify) == 0
    out = capsys.readouterr().out
    assert "ok     orders/\\x1fgotstate/ext/throttle (2 versions)" in out
    assert "3 of 3 records verified, 0 failed" in out
    # Version 1's sealed blob moved to version 3: it no longer authenticates.
    with cli_where.open(keyring) as store:
        blob = store.backend.get(NS, EXT, 1)[1]
        store.backend.put(NS, EXT, 3, blob, kind=KIND, format_version=1, created_at_us=0)
    assert main(verify) == 1
    out = capsys.readouterr().out
    assert "FAILED orders/\\x1fgotstate/ext/throttle (3 versions)" in out
    assert "version 3: IntegrityError" in out


def test_cli_show_reads_a_system_key(
    cli_where: Where, keyring: gp.KeyRing, keys_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_where.open(keyring) as store:
        register(pipeline(store, keyring))
    show = ["show", *cli_where.cli, EXT, "--namespace", NS, "--keys", str(keys_file)]
    assert main(show) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["key"], shown["kind"], shown["version"]) == (EXT, KIND, 1)
    assert shown["record"] == {"name": "throttle", "revision": 1}


def test_migrate_and_reseal_rewrite_system_keys(where: Where, keyring: gp.KeyRing) -> None:
    where.needs("replace (migrate, reseal)")
    with where.open(keyring) as store:
        register(pipeline(store, keyring))
        store.save("order-1", Registration("user", 1))
    with where.open(keyring, formats=formats(newest=2)) as store:
        report = store.migrate(KIND)
        assert (report.scanned, report.migrated, report.failed) == (2, 2, [])
        assert store.backend.versions(NS, EXT)[0].format_version == 2
        assert pipeline(store, keyring).load(EXT)[1] == RegistrationV2("throttle", 1, "registered")
        old = keyring.primary_id
        keyring.rotate()
        assert store.reseal().migrated == 2
        keyring.retire(old)  # every record, the system key's too, is sealed by the new key
        assert pipeline(store, keyring).load(EXT)[1] == RegistrationV2("throttle", 1, "registered")
        assert_exact(store)


def test_a_system_key_name_is_stored_exactly(where: Where, keyring: gp.KeyRing) -> None:
    """Awkward names after the prefix stay separate (the whole key is what backends store)."""
    longest = "n" * (255 - len(system_area_prefix("ext")))
    keys = [system_key("ext", name) for name in ("a/b", "../x", "UPPER", "upper", "é-ñ-✓", longest)]
    with where.open(keyring) as store:
        pipe = pipeline(store, keyring)
        sizes = [register(pipe, key).size for key in keys]
        assert store.backend.keys(NS, system_area_prefix("ext")) == sorted(keys)
        for key in keys:
            assert pipe.load(key)[1] == Registration(split_system_key(key)[1], 1)
        assert store.keys() == []
        assert assert_exact(store) == Usage(sum(sizes), len(keys), 0)


class CountsByListing(Backend):
    """A backend that counts usage the default way (``Backend.usage``), as a plugin may.

    Every operation goes to a real object store underneath; only the counting
    is the contract's own, from ``keys`` and ``versions``.
    """

    def __init__(self, inner: Backend) -> None:
        self._inner = inner

    def head(self, namespace: str, key: str) -> KeyHead:
        return self._inner.head(namespace, key)

    def put(self, namespace: str, key: str, version: int, blob: bytes, **kw: Any) -> VersionInfo:
        return self._inner.put(namespace, key, version, blob, **kw)

    def get(
        self, namespace: str, key: str, version: int | None = None
    ) -> tuple[VersionInfo, bytes]:
        return self._inner.get(namespace, key, version)

    def versions(self, namespace: str, key: str) -> list[VersionInfo]:
        return self._inner.versions(namespace, key)

    def keys(self, namespace: str, prefix: str = "") -> list[str]:
        return self._inner.keys(namespace, prefix)

    def namespaces(self) -> list[str]:
        return self._inner.namespaces()

    def delete(self, namespace: str, key: str, versions: Sequence[int] | None = None) -> int:
        return self._inner.delete(namespace, key, versions)

    def close(self) -> None:
        self._inner.close()


def test_the_default_usage_counts_system_records_but_no_key(
    keyring: gp.KeyRing, tmp_path: Path
) -> None:
    backend = CountsByListing(open_backend(f"file://{tmp_path / 'objects'}"))
    with gp.Store(backend, keyring=keyring, namespace=NS, formats=formats()) as store:
        user = store.save("order-1", Registration("user", 1)).size
        system = register(pipeline(store, keyring)).size
        assert store.usage() == Usage(user + system, 2, 1) == backend.usage(NS)
