"""The configuration commit protocol (config/_commit.py) on every kind of storage.

Payloads here are opaque bytes: what is under test is atomicity, CAS, the
roll-forward of commits whose keys were not written yet, retention and
pruning, and a writer killed at every step of the protocol (SIGKILL in a
real child process) leaving all-old or all-new.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _places import Place, make_place

import gotstate_persist as gp
from gotstate_persist.config._commit import PRUNE_EVERY, Change, ConfigLog, log_key, value_key

KINDS = ("sqlite", "postgresql", "file", "s3")


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return make_place(request.param, request, tmp_path, database="config.db", cls=Place)


def _open(place: Place, keyring: gp.KeyRing, **kwargs: Any) -> gp.Store:
    return gp.open_store(place.url, namespace="cfg", keyring=keyring, **place.options, **kwargs)


def _no_quota() -> tuple[int | None, bool]:
    return None, False


def _log(store: gp.Store) -> ConfigLog:
    return ConfigLog(store._pipeline)


def test_commit_and_read_back(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        log = _log(store)
        first = log.commit([Change("a", 0, 1, b"a1")], max_versions=_no_quota)
        assert [(v.name, v.version, v.commit) for v in first] == [("a", 1, 1)]
        log.commit([Change("a", 1, 1, b"a2"), Change("b", 0, 1, b"b1")], max_versions=_no_quota)
        assert log.value("a").payload == b"a2"
        assert log.value("a", 1).payload == b"a1"
        assert {n: v.payload for n, v in log.values(["a", "b"]).items()} == {
            "a": b"a2",
            "b": b"b1",
        }
        assert [v.version for v in log.history("a")] == [1, 2]
        assert [v.version for v in log.after("a", 1)] == [2]
        assert store.keys() == []  # system keys only
        # another process's view (a fresh log) agrees
        assert _log(store).value("b").payload == b"b1"


def test_stale_expected_version_writes_nothing(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        log = _log(store)
        log.commit([Change("a", 0, 1, b"a1"), Change("b", 0, 1, b"b1")], max_versions=_no_quota)
        before = place.snapshot()
        with pytest.raises(gp.VersionConflict, match=r"'b' is at version 1, not 0") as caught:
            log.commit([Change("a", 1, 1, b"a2"), Change("b", 0, 1, b"b2")], max_versions=_no_quota)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert place.snapshot() == before
        assert log.value("a").version == 1


def test_reject_retention_refuses_before_writing(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        log = _log(store)
        log.commit([Change("a", 0, 1, b"1")], max_versions=lambda: (2, False))
        log.commit([Change("a", 1, 1, b"2")], max_versions=lambda: (2, False))
        before = place.snapshot()
        with pytest.raises(gp.QuotaExceeded, match="max_versions_per_key") as caught:
            log.commit([Change("a", 2, 1, b"3")], max_versions=lambda: (2, False))
        assert caught.value.limit == "max_versions_per_key"
        assert place.snapshot() == before


def test_prune_retention_keeps_the_newest(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        log = _log(store)
        for version in range(5):
            log.commit([Change("a", version, 1, b"%d" % version)], max_versions=lambda: (2, True))
        assert [v.version for v in log.history("a")] == [4, 5]
        with pytest.raises(gp.NotFound):
            log.value("a", 1)
        with pytest.raises(gp.NotFound, match="removed by retention"):
            log.after("a", 1)
        assert [v.version for v in log.after("a", 3)] == [4, 5]


def test_log_pruning_keeps_every_referenced_commit(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        log = _log(store)
        log.commit([Change("kept", 0, 1, b"k")], max_versions=_no_quota)  # commit 1
        for version in range(PRUNE_EVERY * 2):
            log.commit([Change("busy", version, 1, b"b")], max_versions=_no_quota)
        stored = [info.version for info in store.backend.versions("cfg", log_key())]
        assert 1 in stored  # "kept" still points at commit 1
        assert len(stored) < PRUNE_EVERY  # the rest were pruned
        fresh = _log(store)
        assert fresh.value("kept").payload == b"k"
        assert fresh.value("busy").version == PRUNE_EVERY * 2


class _Crash(BaseException):
    """Stands for the process dying at a step (the SIGKILL tests below do it for real)."""


def test_a_commit_whose_key_was_not_written_is_read_and_rolled_forward(
    place: Place, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gotstate_persist.config import _commit

    with _open(place, keyring) as store:
        log = _log(store)
        log.commit([Change("a", 0, 1, b"a1")], max_versions=_no_quota)

        def crash(step: str) -> None:
            if step == "committed":
                raise _Crash

        monkeypatch.setattr(_commit, "on_step", crash)
        with pytest.raises(_Crash):
            log.commit([Change("a", 1, 1, b"a2")], max_versions=_no_quota)
        monkeypatch.undo()
        # SQL writes the commit and the key in one transaction; elsewhere the key lags
        atomic = store.backend.capabilities.atomic_put_many
        assert store.backend.head("cfg", value_key("a")).last_version == (2 if atomic else 1)
        fresh = _log(store)
        assert fresh.value("a").payload == b"a2"  # read from the commit, and written back
        assert store.backend.head("cfg", value_key("a")).last_version == 2
        fresh.commit([Change("a", 2, 1, b"a3")], max_versions=_no_quota)
        assert [v.payload for v in _log(store).history("a")] == [b"a1", b"a2", b"a3"]


def test_the_next_commit_rolls_a_pending_version_forward_first(
    place: Place, keyring: gp.KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gotstate_persist.config import _commit

    with _open(place, keyring) as store:
        log = _log(store)

        def crash(step: str) -> None:
            if step == "committed":
                raise _Crash

        monkeypatch.setattr(_commit, "on_step", crash)
        with pytest.raises(_Crash):
            log.commit([Change("a", 0, 1, b"a1")], max_versions=_no_quota)
        monkeypatch.undo()
        _log(store).commit([Change("a", 1, 1, b"a2")], max_versions=_no_quota)
        assert [v.payload for v in _log(store).history("a")] == [b"a1", b"a2"]


_CRASHER = textwrap.dedent(
    """
    import json, os, signal, sys
    import gotstate_persist as gp
    from gotstate_persist.config import _commit

    url, keys, options, crash_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]

    def step(name):
        if name == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    _commit.on_step = step
    with gp.open_store(url, namespace="cfg", keyring=gp.KeyRing.load(keys),
                       **options) as store:
        log = _commit.ConfigLog(store._pipeline)
        log.commit([_commit.Change("a", 1, 1, b"a-new"), _commit.Change("b", 1, 1, b"b-new")],
                   max_versions=lambda: (None, False))
    """
)


@pytest.mark.parametrize(
    ("crash_at", "committed"),
    [("validated", False), ("committed", True), ("materialized a", True)],
)
def test_sigkill_at_each_step_leaves_all_old_or_all_new(
    place: Place, keyring: gp.KeyRing, crash_at: str, committed: bool
) -> None:
    with _open(place, keyring) as store:
        _log(store).commit(
            [Change("a", 0, 1, b"a-old"), Change("b", 0, 1, b"b-old")], max_versions=_no_quota
        )
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASHER,
            place.url,
            keyring.export(),
            json.dumps(place.options),
            crash_at,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    with _open(place, keyring) as store:
        log = _log(store)
        seen = {name: value.payload for name, value in log.values(["a", "b"]).items()}
        if committed:
            assert seen == {"a": b"a-new", "b": b"b-new"}
            assert [v.payload for v in log.history("b")] == [b"b-old", b"b-new"]
        else:
            assert seen == {"a": b"a-old", "b": b"b-old"}
        # the next writer proceeds normally from whatever is committed
        version = 2 if committed else 1
        log.commit([Change("a", version, 1, b"after")], max_versions=_no_quota)
        assert [v.version for v in log.history("a")] == list(range(1, version + 2))
