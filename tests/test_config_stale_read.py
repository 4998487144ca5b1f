"""A reader holding an older view of the configuration log while writers prune it.

A transaction reads the log's newest commit, then each name's value from the
commit its head points to. Writers that commit meanwhile may prune that commit
(and, with a retention quota, the value's own version): the reader must then
read the materialized value, or be told to read again (``VersionConflict``,
which a compare-and-set loop retries), never fail with ``NotFound``. Seen in a
four-process race on PostgreSQL under load.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import gotstate_persist as gp
from gotstate_persist.config._commit import PRUNE_EVERY


class Counter(msgspec.Struct, frozen=True):
    count: int


def _stores(
    tmp_path: Path, keyring: gp.KeyRing, quota: gp.Quota | None
) -> tuple[gp.Store, gp.Store]:
    url = f"sqlite:///{tmp_path / 'config.db'}"
    writer = gp.open_store(url, keyring=keyring, quota=quota)
    reader = gp.open_store(url, keyring=keyring)
    for store in (writer, reader):
        store.config.define("counter", Counter)
    writer.config.put("counter", Counter(0), expected_version=0)
    return writer, reader


def _advance(store: gp.Store, times: int) -> None:
    for _ in range(times):
        version, current = store.config.current("counter")
        store.config.put("counter", Counter(current.count + 1), expected_version=version)


@pytest.mark.parametrize(
    ("quota", "outcome"),
    [
        (None, "the value it saw"),
        (gp.Quota(max_versions_per_key=2, retention="prune-oldest"), "VersionConflict"),
    ],
    ids=["value kept", "value pruned too"],
)
def test_a_stale_view_reads_the_value_or_is_told_to_read_again(
    tmp_path: Path, keyring: gp.KeyRing, quota: gp.Quota | None, outcome: str
) -> None:
    writer, reader = _stores(tmp_path, keyring, quota)
    with writer, reader:
        _advance(writer, 3)
        log = reader.config.log
        _, seen = log.newest()  # the reader's view: counter at version 4
        assert seen.heads["counter"].version == 4
        _advance(writer, 2 * PRUNE_EVERY)  # prunes the commit the view points to
        assert seen.heads["counter"].commit not in {
            info.version for info in writer.backend.versions(writer.namespace, log._log_key)
        }
        if outcome == "VersionConflict":
            with pytest.raises(gp.VersionConflict, match="read it again"):
                log.head_value(seen, "counter")
        else:
            value = log.head_value(seen, "counter")
            assert value is not None and value.version == 4
        # and a transaction on a fresh view goes through
        _advance(reader, 1)
        assert reader.config.current("counter")[1].count == 3 + 2 * PRUNE_EVERY + 1
