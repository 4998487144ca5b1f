"""``cfg.watch`` (ordered, gap-free, resumable) and ``cfg.live`` (validate, then swap)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgspec
import pytest

import gotstate_persist as gp

#: Generous bound for "eventually" (never a timing assertion on the happy path).
EVENTUALLY_S = 30.0


class Pair(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    left: int
    right: int


def same_sides(candidate: Pair, previous: Pair | None) -> list[str]:
    return [] if candidate.left == candidate.right else ["$.right: must equal $.left"]


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + EVENTUALLY_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_watch_yields_every_version_in_order_then_times_out(store: gp.Store) -> None:
    cfg = store.config
    cfg.define("pair", Pair, validators=[same_sides])
    for version in range(3):
        cfg.put("pair", Pair(version, version), expected_version=version)
    assert [ref.version for ref in cfg.watch("pair", since=0, timeout=0.2)] == [1, 2, 3]
    assert [ref.version for ref in cfg.watch("pair", since=2, timeout=0.2)] == [3]
    assert list(cfg.watch("pair", since=3, timeout=0.2)) == []


def test_watch_sees_concurrent_commits_without_gaps(store: gp.Store) -> None:
    cfg = store.config
    cfg.define("pair", Pair)
    cfg.put("pair", Pair(0, 0), expected_version=0)
    total = 40

    def writer() -> None:
        for version in range(1, total):
            cfg.put("pair", Pair(version, version), expected_version=version)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    for ref in cfg.watch("pair", since=0, timeout=EVENTUALLY_S):
        seen.append(ref.version)
        if ref.version == total:
            break
    thread.join()
    assert seen == list(range(1, total + 1))


_WRITER = textwrap.dedent(
    """
    import sys, msgspec
    import gotstate_persist as gp

    class Pair(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        left: int
        right: int

    url, keys, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    with gp.open_store(url, keyring=gp.KeyRing.load(keys)) as store:
        store.config.define("pair", Pair)
        for version in range(start, start + count):
            store.config.put("pair", Pair(version, version), expected_version=version)
    """
)


def test_watch_resumes_across_restarts_and_processes(tmp_path: Path, keyring: gp.KeyRing) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    with gp.open_store(url, keyring=keyring) as store:
        store.config.define("pair", Pair)
        store.config.put("pair", Pair(0, 0), expected_version=0)
        first = [ref.version for ref in store.config.watch("pair", since=0, timeout=0.1)]
    assert first == [1]
    # another process writes while no one watches, then while we watch
    subprocess.run(
        [sys.executable, "-c", _WRITER, url, keyring.export(), "1", "5"], check=True, timeout=120
    )
    child = subprocess.Popen([sys.executable, "-c", _WRITER, url, keyring.export(), "6", "5"])
    with gp.open_store(url, keyring=keyring) as store:  # "restarted": resume from 1
        store.config.define("pair", Pair)
        seen = []
        for ref in store.config.watch("pair", since=first[-1], timeout=EVENTUALLY_S):
            seen.append(ref.version)
            if ref.version == 11:
                break
    assert child.wait(120) == 0
    assert seen == list(range(2, 12))


def test_watch_from_a_pruned_version_is_not_found(tmp_path: Path, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    with gp.open_store(f"sqlite:///{tmp_path / 'w.db'}", keyring=keyring, quota=quota) as store:
        store.config.define("pair", Pair)
        for version in range(4):
            store.config.put("pair", Pair(version, version), expected_version=version)
        with pytest.raises(gp.NotFound, match="retention"):
            list(store.config.watch("pair", since=1, timeout=0.1))
        assert [r.version for r in store.config.watch("pair", since=2, timeout=0.1)] == [3, 4]


def test_live_swaps_whole_valid_values_and_isolates_subscribers(store: gp.Store) -> None:
    cfg = store.config
    cfg.define("pair", Pair, validators=[same_sides])
    cfg.put("pair", Pair(0, 0), expected_version=0)
    seen: list[Pair] = []
    with cfg.live("pair", poll_s=0.01) as live:
        assert (live.version, live.value) == (1, Pair(0, 0))

        def check(new: Pair, old: Pair) -> None:
            assert new.left == new.right  # never invalid or partial
            seen.append(new)

        def broken(new: Pair, old: Pair) -> None:
            raise RuntimeError("subscriber bug")

        live.subscribe(check)
        live.subscribe(broken)
        live.subscribe(check, prepare=lambda new, old: new.left != 3)  # vetoes version 4
        for version in range(1, 6):
            cfg.put("pair", Pair(version, version), expected_version=version)
        _wait_for(lambda: live.version == 6, "the live value to reach version 6")
        assert live.value == Pair(5, 5)
        assert live.vetoes == 1
        assert live.errors >= 4  # the broken subscriber, once per swap
        assert all(value.left == value.right for value in seen)
        assert Pair(3, 3) not in seen  # vetoed: no subscriber saw it, the value skipped it


def test_live_skips_a_version_this_process_cannot_read(store: gp.Store) -> None:
    cfg = store.config
    cfg.define("pair", Pair)
    cfg.put("pair", Pair(1, 1), expected_version=0)
    with cfg.live("pair", poll_s=0.01) as live:

        class PairV2(msgspec.Struct, frozen=True):
            left: int
            right: int
            label: str = ""

        writer = gp.ConfigStore(store._pipeline)  # a process that knows version 2
        writer.define("pair", Pair)
        writer.define("pair", PairV2, version=2, upcast=lambda old: dict(old, label=""))
        writer.put("pair", PairV2(2, 2, "new"), expected_version=1)
        _wait_for(lambda: live.skipped == 1, "the newer version to be skipped")
        assert (live.version, live.value) == (1, Pair(1, 1))
        # and this older process may not overwrite it (a downgrade): refused, nothing written
        with pytest.raises(gp.FormatError, match="newer"):
            cfg.put("pair", Pair(3, 3), expected_version=2)
        assert [ref.version for ref in cfg.history("pair")] == [1, 2]


def test_closing_the_store_stops_its_live_values(tmp_path: Path, keyring: gp.KeyRing) -> None:
    with gp.open_store(f"sqlite:///{tmp_path / 'l.db'}", keyring=keyring) as store:
        store.config.define("pair", Pair)
        store.config.put("pair", Pair(1, 1), expected_version=0)
        live = store.config.live("pair", poll_s=0.01)
        follower = next(t for t in threading.enumerate() if t.name == "gotstate-live-pair")
    follower.join(EVENTUALLY_S)
    assert not follower.is_alive()
    assert live.value == Pair(1, 1)  # the last value stays readable
