"""The quota rules have one statement in Python; every enforcer must agree with it.

``gotstate_persist._quota_rules`` says when a write crosses a limit and what
retention prunes. The SQL backend states the same rules a second time, as the
conditional UPDATE that charges a write (it must: there the check is the
write; PostgreSQL also has a one-statement append with the same condition),
and the catalog and the in-process adapter apply them too. Here every
enforcer is driven through the public backend API over a grid of quotas at
each limit's boundary, and over random quotas with several limits at once:
the Python rule predicts acceptance or refusal (and the refusal's numbers),
the backend must agree, and a refused write must leave the namespace as it
was. The same grid and random draws run again over namespaces holding system
keys (the library's own records), which count toward bytes and records but
never toward keys, versions per key or retention.

The second part is about the adapter's per-storage state (``_quota_state``):
it is shared by backends on the same storage and by no other, and it lives no
longer than the storage it belongs to.
"""

from __future__ import annotations

import gc
import itertools
import os
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import msgspec
import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gotstate_persist as gp
import gotstate_persist.backends as registry
from gotstate_persist._names import is_system_key, system_key
from gotstate_persist._quota_rules import (
    RETENTIONS,
    check_replace,
    check_write,
    versions_to_prune,
)
from gotstate_persist._quota_state import state_of
from gotstate_persist.backends import Backend, Usage, open_backend
from gotstate_persist.backends.base import Replacement
from gotstate_persist.backends.objectstore import ObjectStoreBackend
from gotstate_persist.quota import QuotaBackend

KIND = "rules.note"
#: What a write adds: to a stored key, or to a new one.
WRITE_KEYS = ("a", "z")
WRITE_SIZES = (3, 8)
#: A namespace before the write: (key, blob size) in the order written.
CONTENTS = ((), (("a", 4),), (("a", 4), ("a", 6), ("b", 5)))
AMOUNTS = ("max_blob_bytes", "max_bytes", "max_records", "max_keys")
#: A system key (the library's own records): bytes and records, but no key.
SYSTEM = system_key("rules", "s")
#: Namespaces holding system keys before the write, and what is written to them.
SYSTEM_CONTENTS = (
    (),
    ((SYSTEM, 4),),
    (("a", 4), (SYSTEM, 6), (SYSTEM, 5)),
    ((SYSTEM, 4), (SYSTEM, 4), ("a", 3), ("b", 2)),
)
SYSTEM_WRITE_KEYS = (SYSTEM, "a", "z")
START = 1_800_000_000.0


# The model: what a namespace holds, and what the Python rules predict.


@dataclass(frozen=True)
class Case:
    """Write ``size`` bytes to ``key`` of a namespace holding ``contents``, under ``quota``."""

    contents: tuple[tuple[str, int], ...]
    quota: gp.Quota
    key: str
    size: int


@dataclass
class Namespace:
    """A namespace on the backend under test and a model of what it holds."""

    name: str
    stored: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)  # key -> versions
    last: dict[str, int] = field(default_factory=dict)

    def usage(self) -> Usage:
        entries = [blob for versions in self.stored.values() for _, blob in versions]
        keys = sum(
            1 for key, versions in self.stored.items() if versions and not is_system_key(key)
        )
        return Usage(sum(len(blob) for blob in entries), len(entries), keys)


def predicted_put(case: Case, space: Namespace) -> tuple[gp.QuotaExceeded | None, int]:
    """The Python rules' verdict on the write, and how many old versions it prunes."""
    stored = space.stored.get(case.key, [])
    system = is_system_key(case.key)
    pruned = versions_to_prune(case.quota, len(stored) + 1, system=system)
    try:
        check_write(
            case.quota,
            space.usage(),
            namespace=space.name,
            size=case.size,
            new_key=not stored,
            key_versions=len(stored) + 1,
            freed_bytes=sum(len(blob) for _, blob in stored[:pruned]),
            pruned=pruned,
            system=system,
        )
    except gp.QuotaExceeded as refusal:
        return refusal, pruned
    return None, pruned


def quota(**limits: Any) -> gp.Quota:
    """A Quota from drawn limits (retention drawn as a plain string)."""
    return gp.Quota(**limits)


def numbers(refusal: gp.QuotaExceeded) -> tuple[Any, ...]:
    return (refusal.limit, refusal.maximum, refusal.usage, refusal.requested)


# The enforcers: each behind the quota adapter, as every store uses them.


class Target:
    """One backend under test; namespaces are made fresh and reused while unchanged."""

    def __init__(self, kind: str, backend: Backend) -> None:
        self.kind = kind
        self.adapter = QuotaBackend(backend)
        self._names = (f"n{uuid.uuid4().hex[:8]}-{index}" for index in itertools.count())
        self._ready: dict[tuple[tuple[str, int], ...], Namespace] = {}

    def namespace(self, contents: tuple[tuple[str, int], ...]) -> Namespace:
        """A namespace holding ``contents`` (written without a quota), or one left unchanged."""
        ready = self._ready.pop(contents, None)
        if ready is not None:
            return ready
        space = Namespace(next(self._names))
        for key, size in contents:
            self.put(space, key, size)
        return space

    def give_back(self, contents: tuple[tuple[str, int], ...], space: Namespace) -> None:
        """Keep an unchanged namespace for the next case with the same contents."""
        self._ready[contents] = space

    def put(self, space: Namespace, key: str, size: int) -> bytes:
        version = space.last.get(key, 0) + 1
        blob = os.urandom(size)
        self.adapter.put(
            space.name, key, version, blob, kind=KIND, format_version=1, created_at_us=0
        )
        space.last[key] = version
        space.stored.setdefault(key, []).append((version, blob))
        return blob

    def assert_holds(self, space: Namespace, key: str) -> None:
        """The backend holds what the model says: the key's versions, and the usage."""
        seen = [(info.version, info.size) for info in self.adapter.versions(space.name, key)]
        assert seen == [(version, len(blob)) for version, blob in space.stored.get(key, [])]
        assert self.adapter.usage(space.name) == space.usage()


@pytest.fixture(params=["sqlite", "postgresql", "memory", "catalog"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """SQL (SQLite, PostgreSQL) and a catalog charge in SQL; plain objects in the adapter."""
    root = f"memory://quota-rules-{uuid.uuid4().hex}"
    quick = {"sqlite_synchronous": "OFF"}  # durability is no part of these rules
    if request.param == "sqlite":
        backend = open_backend(f"sqlite:///{tmp_path / 'rules.db'}", **quick)
    elif request.param == "postgresql":
        backend = open_backend(request.getfixturevalue("pg_url"))
    elif request.param == "memory":
        backend = open_backend(root)
    else:
        catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
        backend = open_backend(root, catalog=catalog, catalog_options=quick)
    try:
        yield Target(request.param, backend)
    finally:
        backend.close()
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)


def check_put(target: Target, case: Case) -> None:
    """Run one write and compare the backend with the rules' prediction."""
    space = target.namespace(case.contents)
    target.adapter.set_quota(space.name, case.quota)
    expected, pruned = predicted_put(case, space)
    try:
        target.put(space, case.key, case.size)
    except gp.QuotaExceeded as refusal:
        assert expected is not None, f"{case}: refused ({refusal.limit}), the rules admit it"
        assert numbers(refusal) == numbers(expected), case
        target.assert_holds(space, case.key)  # nothing written, nothing pruned
        target.give_back(case.contents, space)
        return
    assert expected is None, f"{case}: stored, the rules refuse it ({expected.limit})"
    del space.stored[case.key][:pruned]
    target.assert_holds(space, case.key)


# Every limit at its boundary, alone and with each retention rule.


def version_rules(held: int) -> Iterator[tuple[int | None, str]]:
    """``(max_versions_per_key, retention)`` around a key holding ``held`` versions.

    "reject" just below and at what the write needs; "prune-oldest" pruning
    two, one or no versions.
    """
    yield None, "reject"
    for most in (held, held + 1):
        if most >= 1:
            yield most, "reject"
    for most in (held - 1, held, held + 1):
        if most >= 1:
            yield most, "prune-oldest"


def boundary_cases(
    every_contents: tuple[tuple[tuple[str, int], ...], ...] = CONTENTS,
    write_keys: tuple[str, ...] = WRITE_KEYS,
) -> Iterator[Case]:
    """Each amount limit just below and at what the write needs, under each retention rule.

    What the write needs is net of what retention frees, so some needs are at
    or below the usage: a limit lowered below usage must not refuse a write
    that does not need more of it.
    """
    for contents, key, size in itertools.product(every_contents, write_keys, WRITE_SIZES):
        sizes = [length for stored, length in contents if stored == key]
        if not contents and key != write_keys[0]:
            continue  # every key is new in an empty namespace
        for most, retention in version_rules(len(sizes)):
            yield from _around_each_amount(contents, key, size, most, retention)


def needs(case: Case) -> dict[str, int]:
    """What the write takes each amount limit to, net of what retention frees.

    A system key is never a key: a write to one needs no more ``max_keys``.
    """
    sizes = [length for stored, length in case.contents if stored == case.key]
    system = is_system_key(case.key)
    pruned = versions_to_prune(case.quota, len(sizes) + 1, system=system)
    users = {stored for stored, _ in case.contents if not is_system_key(stored)}
    return {
        "max_blob_bytes": case.size,
        "max_bytes": sum(length for _, length in case.contents) + case.size - sum(sizes[:pruned]),
        "max_records": len(case.contents) + 1 - pruned,
        "max_keys": len(users) + (0 if sizes or system else 1),
    }


def _around_each_amount(
    contents: tuple[tuple[str, int], ...], key: str, size: int, most: int | None, retention: str
) -> Iterator[Case]:
    rule = Case(contents, quota(max_versions_per_key=most, retention=retention), key, size)
    needed = needs(rule)
    yield rule
    for limit in AMOUNTS:
        for value in (needed[limit] - 1, needed[limit]):
            if value >= 1:
                limits = {"max_versions_per_key": most, "retention": retention, limit: value}
                yield Case(contents, quota(**limits), key, size)


BOUNDARY_CASES = list(boundary_cases())
#: The same grid for namespaces holding system keys, writing to one or to a user key.
SYSTEM_BOUNDARY_CASES = list(boundary_cases(SYSTEM_CONTENTS, SYSTEM_WRITE_KEYS))


def test_the_grid_reaches_every_limit_both_ways() -> None:
    """The grid is worth running: each limit both refuses and admits, and pruning happens."""
    outcomes = set()
    for case in BOUNDARY_CASES:
        space = Namespace("model")
        for key, size in case.contents:
            space.stored.setdefault(key, []).append((0, bytes(size)))
        refusal, pruned = predicted_put(case, space)
        outcomes.add(refusal.limit if refusal is not None else "stored")
        outcomes.add("pruned" if pruned else "kept")
        for limit in (*AMOUNTS, "max_versions_per_key"):
            if getattr(case.quota, limit) is not None and (
                refusal is None or refusal.limit != limit
            ):
                outcomes.add(f"{limit} admits")
    assert outcomes == {
        "stored",
        "pruned",
        "kept",
        "max_versions_per_key",
        "max_versions_per_key admits",
        *AMOUNTS,
        *(f"{limit} admits" for limit in AMOUNTS),
    }


def test_every_limit_at_its_boundary_agrees_with_the_rules(target: Target) -> None:
    for case in BOUNDARY_CASES:
        check_put(target, case)


def _outcomes(case: Case) -> tuple[str, int]:
    """What the rules predict for ``case``: the refusing limit or "stored", and versions pruned."""
    space = Namespace("model")
    for key, size in case.contents:
        space.stored.setdefault(key, []).append((0, bytes(size)))
    refusal, pruned = predicted_put(case, space)
    return (refusal.limit if refusal is not None else "stored"), pruned


def test_the_system_grid_spares_system_keys_the_per_key_limits() -> None:
    """System keys: bytes and records bind both ways; keys, versions per key and retention never.

    A user key written beside them is still held to every limit (the system
    keys never count as keys for its max_keys).
    """
    system = [_outcomes(case) for case in SYSTEM_BOUNDARY_CASES if case.key == SYSTEM]
    assert {outcome for outcome, _pruned in system} == {
        "stored",
        "max_blob_bytes",
        "max_bytes",
        "max_records",
    }
    assert {pruned for _outcome, pruned in system} == {0}
    assert any(
        case.key == SYSTEM
        and case.quota.max_versions_per_key is not None
        and case.quota.max_versions_per_key <= sum(1 for k, _ in case.contents if k == SYSTEM)
        and _outcomes(case)[0] == "stored"
        for case in SYSTEM_BOUNDARY_CASES
    ), "the grid holds system writes beyond max_versions_per_key"
    users = {_outcomes(case) for case in SYSTEM_BOUNDARY_CASES if case.key != SYSTEM}
    assert {outcome for outcome, _pruned in users} == {
        "stored",
        "max_versions_per_key",
        *AMOUNTS,
    }
    assert any(pruned for _outcome, pruned in users)


def test_system_keys_at_every_boundary_agree_with_the_rules(target: Target) -> None:
    for case in SYSTEM_BOUNDARY_CASES:
        check_put(target, case)


# Several limits at once, at random.


def _limit(threshold: int) -> st.SearchStrategy[int | None]:
    near = sorted({max(1, threshold + offset) for offset in (-1, 0, 1)})
    return st.none() | st.sampled_from(near) | st.integers(1, 60)


@st.composite
def mixed_cases(
    draw: st.DrawFn, stored: Sequence[str] = "abc", written: Sequence[str] = "abz"
) -> Case:
    contents = tuple(
        draw(st.lists(st.tuples(st.sampled_from(stored), st.integers(1, 12)), max_size=6))
    )
    key = draw(st.sampled_from(written))
    size = draw(st.integers(1, 16))
    rule = quota(
        max_versions_per_key=draw(st.none() | st.integers(1, 4)),
        retention=draw(st.sampled_from(RETENTIONS)),
    )
    needed = needs(Case(contents, rule, key, size))
    limits = {limit: draw(_limit(needed[limit])) for limit in AMOUNTS}
    return Case(contents, msgspec.structs.replace(rule, **limits), key, size)


def _examples(count: int) -> settings:
    """A modest number of random examples against one database, without deadlines."""
    return settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@_examples(40)
@given(case=mixed_cases())
def test_several_limits_at_once_agree_with_the_rules(target: Target, case: Case) -> None:
    check_put(target, case)


@_examples(30)
@given(case=mixed_cases(stored=("a", "b", SYSTEM), written=("a", "z", SYSTEM)))
def test_several_limits_with_system_keys_agree_with_the_rules(target: Target, case: Case) -> None:
    check_put(target, case)


# Rewrites in place (migrate, reseal): the bytes they add, and the largest blob.


@st.composite
def rewrites(draw: st.DrawFn) -> tuple[tuple[tuple[str, int], ...], list[int], gp.Quota]:
    """Contents, the new size of each stored version (in order), and a quota."""
    contents = tuple(
        draw(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 12)), min_size=1, max_size=4))
    )
    sizes = draw(st.lists(st.integers(1, 16), min_size=len(contents), max_size=len(contents)))
    total = sum(length for _, length in contents)
    grow = sum(sizes) - total
    limits = gp.Quota(
        max_blob_bytes=draw(_limit(max(sizes))),
        max_bytes=draw(_limit(total + grow)),
        max_records=draw(st.none() | st.integers(1, len(contents))),  # never binds a rewrite
        max_keys=draw(st.none() | st.just(1)),
        max_versions_per_key=draw(st.none() | st.just(1)),
    )
    return contents, sizes, limits


def predicted_rewrite(
    target: Target, space: Namespace, limits: gp.Quota, batch: list[Replacement]
) -> tuple[int, gp.QuotaExceeded | None]:
    """How many of ``batch`` the rules let through, and the refusal of the next one.

    SQL rewrites a batch in one transaction, checked once; a catalog rewrites
    record by record (each through a new object), each checked on its own.
    """
    steps = [batch] if target.kind != "catalog" else [[one] for one in batch]
    usage = space.usage()
    done = 0
    for step in steps:
        grow = sum(len(r.blob) - len(r.expected) for r in step)
        try:
            check_replace(
                limits,
                usage,
                namespace=space.name,
                largest=max(len(r.blob) for r in step),
                grow=grow,
            )
        except gp.QuotaExceeded as refusal:
            return done, refusal
        usage = Usage(usage.bytes + grow, usage.records, usage.keys)
        done += len(step)
    return done, None


@_examples(30)
@given(rewrite=rewrites())
def test_rewrites_agree_with_the_rules(
    target: Target, rewrite: tuple[tuple[tuple[str, int], ...], list[int], gp.Quota]
) -> None:
    contents, sizes, limits = rewrite
    space = target.namespace(contents)
    target.adapter.set_quota(space.name, limits)
    stored = [(key, version, blob) for key, kept in space.stored.items() for version, blob in kept]
    batch = [
        Replacement(key, version, os.urandom(size), 1, expected=blob)
        for (key, version, blob), size in zip(stored, sizes, strict=True)
    ]
    through, expected = predicted_rewrite(target, space, limits, batch)
    try:
        done = target.adapter.replace(space.name, batch)
    except gp.QuotaExceeded as refusal:
        assert expected is not None, f"{rewrite}: refused ({refusal.limit}), the rules admit it"
        assert numbers(refusal) == numbers(expected)
    else:
        assert expected is None, f"{rewrite}: rewritten, the rules refuse it ({expected.limit})"
        assert done == [True] * len(batch)
    swapped = {(r.key, r.version): r.blob for r in batch[:through]}
    for key, kept in space.stored.items():
        kept[:] = [(version, swapped.get((key, version), blob)) for version, blob in kept]
        for version, blob in kept:
            assert target.adapter.get(space.name, key, version)[1] == blob
    assert target.adapter.usage(space.name) == space.usage()
    if through == 0:
        target.give_back(contents, space)


# Per-storage state: shared by one storage's backends, by no other, gone with its storage.


class SameRepr(ObjectStoreBackend):
    """A plugin-like backend whose repr names no storage (as a careless plugin's might)."""

    def __repr__(self) -> str:
        return "SameRepr()"


def _stored_note(adapter: QuotaBackend, version: int = 1) -> None:
    adapter.put("ns", "k", version, b"x" * 10, kind=KIND, format_version=1, created_at_us=0)


@pytest.fixture
def memory_roots() -> Iterator[list[str]]:
    roots: list[str] = []
    yield roots
    memory = fsspec.filesystem("memory")
    for root in roots:
        if memory.exists(root):
            memory.rm(root, recursive=True)


def _root(roots: list[str]) -> str:
    roots.append(f"memory://quota-state-{uuid.uuid4().hex}")
    return roots[-1]


def test_backends_with_one_repr_on_two_storages_share_no_state(memory_roots: list[str]) -> None:
    one, two = SameRepr(_root(memory_roots)), SameRepr(_root(memory_roots))
    assert repr(one) == repr(two)
    with time_machine.travel(START, tick=False) as traveller:
        first, second = QuotaBackend(one), QuotaBackend(two)
        for adapter in (first, second):
            adapter.set_quota("ns", gp.Quota(max_records=1, max_writes_per_second=1))
            _stored_note(adapter)  # each storage's first write: its own window and tally
            assert adapter.usage("ns") == Usage(10, 1, 1)
        with pytest.raises(gp.RateLimited):
            _stored_note(first, 2)
        traveller.shift(1)
        with pytest.raises(gp.QuotaExceeded):
            _stored_note(first, 2)


def test_opened_backends_share_state_per_url_not_per_repr(
    memory_roots: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_backend names the storage: by the URL opened, never by what repr says."""
    monkeypatch.setitem(
        registry._registered,  # a scheme for this test only
        "samerepr",
        lambda url, **options: SameRepr(url.replace("samerepr://", "memory://"), **options),
    )
    url, other = (_root(memory_roots).replace("memory://", "samerepr://") for _ in range(2))
    one, again, elsewhere = open_backend(url), open_backend(url), open_backend(other)
    assert repr(one) == repr(again) == repr(elsewhere)
    assert state_of(one) is state_of(again)
    assert state_of(one) is not state_of(elsewhere)
    first, second = QuotaBackend(one), QuotaBackend(again)
    first.set_quota("ns", gp.Quota(max_records=1))
    assert second.quota("ns") == gp.Quota(max_records=1)  # the cached copy is shared too
    _stored_note(first)
    with pytest.raises(gp.QuotaExceeded):  # one tally for the storage
        _stored_note(second, 2)
    third = QuotaBackend(elsewhere)
    third.set_quota("ns", gp.Quota(max_records=1))
    _stored_note(third)


def test_the_tally_of_a_backend_goes_with_it(memory_roots: list[str]) -> None:
    backend = SameRepr(_root(memory_roots))
    adapter = QuotaBackend(backend)
    adapter.set_quota("ns", gp.Quota(max_records=5))
    _stored_note(adapter)
    state = weakref.ref(state_of(backend))
    assert state() is state_of(adapter.inner)
    del adapter, backend
    gc.collect()
    assert state() is None
    # A new backend on the same storage counts afresh from what is stored.
    fresh = QuotaBackend(SameRepr(memory_roots[0]))
    assert fresh.usage("ns") == Usage(10, 1, 1)
