"""``log``, ``journal``, ``diff`` and ``show --at``: looking back at a machine's history.

Every test populates a real store through ``store.open_machine(..., journal=True,
snapshot_every=3)`` and ``process_event(..., meta={"actor": ...})`` on the order
workflow, with a clock that moves one second per reading, so every snapshot and
entry has its own moment; expected lines are built from what ``store.journal``
and ``store.versions`` return, never from guessed times. The commands run in
process (``main``) on SQLite files, and once each on PostgreSQL and S3 (moto).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gotstate.core.events import Event
from gotstate.core.state_machine import StateMachine
from machines import build_composite_machine
from order_workflow import build_order_machine, set_data

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

KEY = "order-42"
NAMESPACE = "orders"
START = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
#: Planted in state data and in a journal entry's meta: commands that list or fail
#: must never print it (``show`` and ``journal`` print data, as ``show`` always has).
DATA_CANARY = "cnry-history-data-P4w8"
META_CANARY = "cnry-history-meta-L2z6"
#: (event, actor) as the application sends them; ``None``: no actor in meta.
EVENTS: list[tuple[str, str | None]] = [
    ("start", "api"),
    ("checkout", "web"),
    ("pay", "api"),
    ("pack", "worker"),
    ("ship", None),
]
#: (source, target) each event takes the order workflow through.
MOVES = [
    ("idle", "cart"),
    ("cart", "payment"),
    ("payment", "picking"),
    ("picking", "packed"),
    ("packed", "shipped"),
]


class Invoice(msgspec.Struct):
    """A record that is not a machine snapshot."""

    total: int


class Ticker:
    """A store clock: one second later at every reading."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return START + timedelta(seconds=next(self._ticks))


def drop_data(machine: StateMachine, state: str, key: str) -> None:
    found = next(s for s in machine.get_states() if s.name == state)
    machine._graph.get_state_data(found).pop(key)


@dataclass
class History:
    """A populated store and what the library itself says is in it."""

    url: str
    keys: Path
    entries: list[gp.JournalEntry]
    versions: list[gp.SnapshotRef]

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(
            [argv[0], self.url, *argv[1:], "--namespace", NAMESPACE, "--keys", str(self.keys)]
        )
        out, err = capsys.readouterr()
        return code, out, err


def _open(url: str, keyring: gp.KeyRing, options: dict[str, Any]) -> gp.Store:
    return gp.Store(
        open_backend(url, **options), keyring=keyring, namespace=NAMESPACE, clock=Ticker()
    )


def populate(url: str, keyring: gp.KeyRing, keys: Path, **options: Any) -> History:
    """Five events journaled with snapshot_every=3 (snapshots after 1, 4 and at detach).

    Before ``pack`` the cart's total changes, a coupon is added and the note
    removed; the data canary stays as it was all along.
    """
    with _open(url, keyring, options) as store:
        attached = store.open_machine(KEY, build_order_machine, journal=True, snapshot_every=3)
        machine = attached.machine
        set_data(machine, "cart", "total", Decimal("9.99"))
        set_data(machine, "cart", "note", "leave at the door")
        set_data(machine, "cart", "card", DATA_CANARY)
        for name, actor in EVENTS:
            if name == "pack":
                set_data(machine, "cart", "total", Decimal("12.50"))
                set_data(machine, "cart", "coupon", "SPRING")
                drop_data(machine, "cart", "note")
            meta: dict[str, Any] = {"request_id": f"r-{name}", "card": META_CANARY}
            if actor is not None:
                meta["actor"] = actor
            assert attached.process_event(Event(name), meta=meta)
        attached.detach()
        entries, versions = store.journal(KEY), store.versions(KEY)
    keys.write_text(keyring.export(), encoding="utf-8")
    return History(url, keys, entries, versions)


@pytest.fixture
def history(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path) -> History:
    return populate(sqlite_url, keyring, tmp_path / "keys.json")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cells(out: str) -> list[list[str]]:
    """A plain table's rows (the header first), split on the column gaps."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]


# log


def expected_log(history: History) -> list[list[str]]:
    e, v = history.entries, history.versions
    snapshot = [[iso(ref.created_at), "-", f"snapshot v{ref.version}"] for ref in v]
    entry = [
        [iso(item.at), str(item.seq), name, f"{source} → {target}", actor or "-"]
        for item, (name, actor), (source, target) in zip(e, EVENTS, MOVES, strict=True)
    ]
    # the first event of a new key is followed by a snapshot, then one every 3 events,
    # and detach flushes the last event into one
    return [entry[0], snapshot[0], *entry[1:4], snapshot[1], entry[4], snapshot[2]]


def test_log_merges_snapshots_and_entries_oldest_first(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    assert [item.seq for item in history.entries] == [1, 2, 3, 4, 5]
    assert [ref.version for ref in history.versions] == [1, 2, 3]
    code, out, err = history.run(capsys, "log", KEY)
    assert (code, err) == (EXIT_OK, "")
    rows = cells(out)
    assert rows[0] == ["TIME (UTC)", "SEQ", "WHAT", "DETAIL", "ACTOR"]
    shown = [row if row[1] != "-" else row[:3] for row in rows[1:]]
    assert shown == expected_log(history)
    for row, ref in zip([r for r in rows[1:] if r[1] == "-"], history.versions, strict=True):
        assert row[3] == f"{ref.size} B, format {ref.format_version}"
        assert row[4] == "-"
    assert DATA_CANARY not in out and META_CANARY not in out  # only the actor of meta


def test_log_json(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = history.run(capsys, "log", KEY, "--json")
    assert code == EXIT_OK
    document = json.loads(out)
    assert (document["shape_version"], document["command"]) == (1, "log")
    assert (document["namespace"], document["key"]) == (NAMESPACE, KEY)
    items = document["items"]
    kinds = ["entry", "snapshot", "entry", "entry", "entry", "snapshot", "entry", "snapshot"]
    assert [item["type"] for item in items] == kinds
    entries = [item for item in items if item["type"] == "entry"]
    assert entries[0] == {
        "at": iso(history.entries[0].at),
        "type": "entry",
        "seq": 1,
        "event": "start",
        "source": "idle",
        "target": "cart",
        "actor": "api",
    }
    assert [item["actor"] for item in entries] == [actor for _, actor in EVENTS]
    snapshots = [item for item in items if item["type"] == "snapshot"]
    assert [item["version"] for item in snapshots] == [1, 2, 3]
    assert snapshots[0]["kind"] == "gotstate.machine"
    assert snapshots[0]["size"] == history.versions[0].size
    assert META_CANARY not in out and DATA_CANARY not in out


def test_log_of_a_key_without_a_journal_shows_its_snapshots(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = populate(sqlite_url, keyring, tmp_path / "keys.json")
    with _open(sqlite_url, keyring, {}) as store:
        machine = build_order_machine()
        machine.start()
        store.save_machine("plain-7", machine)
        machine.process_event(Event("start"))
        store.save_machine("plain-7", machine)
        versions = store.versions("plain-7")
    code, out, _ = history.run(capsys, "log", "plain-7")
    assert code == EXIT_OK
    assert [row[:3] for row in cells(out)[1:]] == [
        [iso(ref.created_at), "-", f"snapshot v{ref.version}"] for ref in versions
    ]
    code, out, _ = history.run(capsys, "journal", "plain-7")
    assert (code, out) == (EXIT_OK, "(no journal entries)\n")


def test_an_attached_key_without_a_journal_logs_one_snapshot_per_event(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export(), encoding="utf-8")
    with _open(sqlite_url, keyring, {}) as store:
        with store.open_machine("order-9", build_order_machine) as attached:
            attached.process_event(Event("start"), meta={"actor": "api"})
            attached.process_event(Event("checkout"))
        versions = store.versions("order-9")
    history = History(sqlite_url, keys, [], versions)
    code, out, _ = history.run(capsys, "log", "order-9")
    assert code == EXIT_OK
    assert [v.version for v in versions] == [1, 2]
    assert [row[1:3] for row in cells(out)[1:]] == [["-", "snapshot v1"], ["-", "snapshot v2"]]


# journal


def test_journal_prints_every_entry_in_full(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = history.run(capsys, "journal", KEY)
    assert code == EXIT_OK
    rows = cells(out)
    assert rows[0] == [
        "SEQ",
        "TIME (UTC)",
        "EVENT",
        "PRIORITY",
        "SOURCE",
        "TARGET",
        "SNAPSHOT",
        "METADATA",
        "META",
    ]
    for row, entry, (name, actor), (source, target) in zip(
        rows[1:], history.entries, EVENTS, MOVES, strict=True
    ):
        snapshot = f"v{entry.snapshot_version}" if entry.snapshot_version else "-"
        assert row[:8] == [str(entry.seq), iso(entry.at), name, "0", source, target, snapshot, "{}"]
        assert json.loads(row[8]) == entry.meta
        assert (json.loads(row[8]).get("actor")) == actor
    assert [row[6] for row in rows[1:]] == ["-", "v1", "v1", "v1", "v2"]


def test_journal_since_and_json(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = history.run(capsys, "journal", KEY, "--since", "3")
    assert code == EXIT_OK
    assert [row[0] for row in cells(out)[1:]] == ["4", "5"]
    code, out, _ = history.run(capsys, "journal", KEY, "--since", "3", "--json")
    fourth = history.entries[3]
    assert json.loads(out)["entries"][0] == {
        "seq": 4,
        "at": iso(fourth.at),
        "event": {"name": "pack", "priority": 0, "metadata": {}},
        "source": "picking",
        "target": "packed",
        "meta": {"request_id": "r-pack", "card": META_CANARY, "actor": "worker"},
        "snapshot_version": 1,
    }
    code, out, _ = history.run(capsys, "journal", KEY, "--since", "5")
    assert (code, out) == (EXIT_OK, "(no journal entries after sequence 5)\n")
    code, out, _ = history.run(capsys, "journal", KEY, "--since", "5", "--json")
    assert json.loads(out)["entries"] == []
    for bad in ("-1", "x", "1.5"):
        code, _, err = history.run(capsys, "journal", KEY, "--since", bad)
        assert code == EXIT_USAGE
        assert "whole number >= 0" in err


def test_journal_prints_values_as_show_prints_state_data(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export(), encoding="utf-8")
    meta = {"actor": "\x1b[31mred", "amount": Decimal("1.10"), "tags": ("a", "b")}
    with (
        _open(sqlite_url, keyring, {}) as store,
        store.open_machine("esc-1", build_order_machine, journal=True) as attached,
    ):
        set_data(attached.machine, "cart", "amount", Decimal("1.10"))
        event = Event("start")
        event.metadata.update({"via": "\u202eevil"})
        attached.process_event(event, meta=meta)
    history = History(sqlite_url, keys, [], [])
    code, out, _ = history.run(capsys, "journal", "esc-1", "--json")
    assert code == EXIT_OK
    entry = json.loads(out)["entries"][0]
    assert entry["event"]["metadata"] == {"via": "\u202eevil"}
    assert entry["meta"] == {
        "actor": "\x1b[31mred",
        "amount": {"$decimal": "1.10"},
        "tags": {"$tuple": ["a", "b"]},
    }
    assert "\x1b" not in out and "\u202e" not in out  # escaped, still valid JSON
    code, shown, _ = history.run(capsys, "show", "esc-1")
    assert json.loads(shown)["record"]["state_data"]["cart"] == {"amount": entry["meta"]["amount"]}
    code, out, _ = history.run(capsys, "log", "esc-1")
    assert "\x1b" not in out and "\\x1b[31mred" in out
    code, out, _ = history.run(capsys, "journal", "esc-1")
    assert "\x1b" not in out and "\u202e" not in out


# show --at


def between(first: datetime, second: datetime) -> datetime:
    return first + (second - first) / 2


def test_show_at_a_moment_between_entries(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    e, v = history.entries, history.versions
    moment = between(e[2].at, e[3].at)  # after pay, before pack: snapshot 1 + entries 2, 3
    code, out, _ = history.run(capsys, "show", KEY, "--at", iso(moment))
    assert code == EXIT_OK
    shown = json.loads(out)
    assert shown["version"] == 1 and shown["saved"] == v[0].created_at.isoformat()
    assert shown["record"]["current_state"] == "cart"
    assert shown["at"] == iso(moment)
    assert [(x["seq"], x["event"]["name"], x["meta"].get("actor")) for x in shown["journal"]] == [
        (2, "checkout", "web"),
        (3, "pay", "api"),
    ]
    assert [(x["source"], x["target"]) for x in shown["journal"]] == [MOVES[1], MOVES[2]]
    # the document is show's, plus the moment and the journal after it
    code, plain_show, _ = history.run(capsys, "show", KEY, "--version", "1")
    assert {k: val for k, val in shown.items() if k not in ("at", "journal")} == json.loads(
        plain_show
    )
    # the same moment in another offset; an entry's own moment is included
    local = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
    code, out, _ = history.run(capsys, "show", KEY, "--at", local)
    assert json.loads(out)["journal"] == shown["journal"]
    code, out, _ = history.run(capsys, "show", KEY, "--at", iso(e[3].at))
    assert [x["seq"] for x in json.loads(out)["journal"]] == [2, 3, 4]
    # after snapshot 2 (which covers entry 4): only entry 5
    code, out, _ = history.run(capsys, "show", KEY, "--at", iso(between(e[4].at, v[2].created_at)))
    later = json.loads(out)
    assert later["version"] == 2 and later["record"]["current_state"] == "packed"
    assert [x["seq"] for x in later["journal"]] == [5]
    code, out, _ = history.run(capsys, "show", KEY, "--at", "2999-01-01T00:00:00Z")
    assert json.loads(out)["version"] == 3 and json.loads(out)["journal"] == []


def test_show_at_before_the_first_snapshot_is_not_found(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    first = history.versions[0].created_at
    for moment in (START - timedelta(days=1), between(history.entries[0].at, first)):
        code, out, err = history.run(capsys, "show", KEY, "--at", iso(moment))
        assert (code, out) == (EXIT_FAILED, "")
        assert err == (
            f"gotstate-persist: NotFound: key '{KEY}' has no snapshot taken at or before "
            f"{iso(moment)}: its first was taken at {iso(first)}; 'gotstate-persist log' "
            "lists when each was taken\n"
        )


def test_show_at_refuses_a_naive_time_and_version_with_at(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = history.run(capsys, "show", KEY, "--at", "2025-06-01T10:00:05")
    assert (code, out) == (EXIT_USAGE, "")
    assert "has no UTC offset" in err and "add one, e.g. 2025-06-01T10:00:05Z" in err
    code, _, err = history.run(capsys, "show", KEY, "--at", "yesterday")
    assert code == EXIT_USAGE and "use ISO 8601 with an offset" in err
    code, _, err = history.run(capsys, "show", KEY, "--at", iso(START), "--version", "1")
    assert code == EXIT_USAGE and "not allowed with argument" in err


# diff


def test_diff_of_two_versions(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = history.run(capsys, "diff", KEY, "1", "2")
    assert (code, err) == (EXIT_OK, "")
    assert cells(out) == [
        ["PATH", "CHANGE", "OLD", "NEW"],
        ["current_state", "changed", '"cart"', '"packed"'],
        ["history.checkout", "changed", '"cart"', '"payment"'],
        ["history.fulfilment", "added", "-", '"packed"'],
        ["state_data.cart.total", "changed", '{"$decimal": "9.99"}', '{"$decimal": "12.50"}'],
        ["state_data.cart.note", "removed", '"leave at the door"', "-"],
        ["state_data.cart.coupon", "added", "-", '"SPRING"'],
    ]
    assert DATA_CANARY not in out  # unchanged values are not printed
    code, out, _ = history.run(capsys, "diff", KEY, "2", "1", "--json")
    assert code == EXIT_OK
    changes = {item["path"]: item for item in json.loads(out)["changes"]}
    assert changes["current_state"] == {
        "path": "current_state",
        "change": "changed",
        "old": "packed",
        "new": "cart",
    }
    assert changes["state_data.cart.note"]["change"] == "added"
    assert changes["state_data.cart.coupon"] == {
        "path": "state_data.cart.coupon",
        "change": "removed",
        "old": "SPRING",
        "new": None,
    }
    code, out, _ = history.run(capsys, "diff", KEY, "2", "3")
    assert cells(out)[1:] == [["current_state", "changed", '"packed"', '"shipped"']]
    code, out, _ = history.run(capsys, "diff", KEY, "3", "3")
    assert (code, out) == (EXIT_OK, "(no changes from version 3 to 3)\n")
    code, out, _ = history.run(capsys, "diff", KEY, "3", "3", "--json")
    assert (code, json.loads(out)["changes"]) == (EXIT_OK, [])


def test_diff_compares_values_exactly(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export(), encoding="utf-8")
    machine = build_order_machine()
    machine.start()
    with _open(sqlite_url, keyring, {}) as store:
        values: list[dict[str, Any]] = [
            {"d": {"a": 1, "b": 2}, "n": float("nan"), "x": Decimal("1.1"), "t": (1, 2)},
            {"d": {"b": 2, "a": 1}, "n": float("nan"), "x": Decimal("1.10"), "t": [1, 2]},
        ]
        for data in values:
            for name, value in data.items():
                set_data(machine, "idle", name, value)
            store.save_machine("exact", machine)
    history = History(sqlite_url, keys, [], [])
    code, out, _ = history.run(capsys, "diff", "exact", "1", "2")
    assert code == EXIT_OK
    assert [row[:2] for row in cells(out)[1:]] == [
        ["state_data.idle.x", "changed"],
        ["state_data.idle.t", "changed"],
    ]
    assert cells(out)[1][2:] == ['{"$decimal": "1.1"}', '{"$decimal": "1.10"}']
    assert cells(out)[2][2:] == ['{"$tuple": [1, 2]}', "[1, 2]"]


def test_diff_of_submachines_and_of_data_this_tool_cannot_decode(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export(), encoding="utf-8")
    formats = gp.FormatRegistry()
    formats.register(Invoice, kind="invoice", version=1)
    with gp.Store(open_backend(sqlite_url), keyring=keyring, formats=formats) as store:
        machine = build_composite_machine()
        machine.start()
        set_data(machine, "idle", "invoice", Invoice(total=1))
        store.save_machine("composite", machine)
        for name in ("go", "next", "next"):
            assert machine.process_event(Event(name))
        review = next(iter(machine._submachines.values()))
        set_data(review, "draft", "reviewer", "ann")
        set_data(machine, "idle", "invoice", Invoice(total=2))
        store.save_machine("composite", machine)
        store.save_machine("composite", machine)
    capsys.readouterr()
    assert main(["diff", sqlite_url, "composite", "1", "2", "--keys", str(keys), "--json"]) == 0
    changes = {item["path"]: item for item in json.loads(capsys.readouterr().out)["changes"]}
    assert changes["current_state"]["new"] == "draft"
    assert changes["history.work"] == {
        "path": "history.work",
        "change": "added",
        "old": None,
        "new": "step-b",
    }
    assert changes["submachines.review.state_data.draft.reviewer"] == {
        "path": "submachines.review.state_data.draft.reviewer",
        "change": "added",
        "old": None,
        "new": "ann",
    }
    # the CLI does not know the application's Struct: the state's data is compared as a
    # whole, shown as show shows it: the Struct alone $undecodable, the rest decoded
    undecodable = changes["state_data.idle"]
    assert undecodable["change"] == "changed"
    hidden = undecodable["old"]["invoice"]["$undecodable"]
    assert (hidden["kind"], hidden["version"]) == ("invoice", 1)
    assert "kind 'invoice'" in hidden["reason"]
    assert main(["diff", sqlite_url, "composite", "2", "3", "--keys", str(keys)]) == 0
    assert capsys.readouterr().out == "(no changes from version 2 to 3)\n"


def test_diff_of_missing_versions_and_other_records(
    history: History, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = history.run(capsys, "diff", KEY, "1", "9")
    assert (code, out) == (EXIT_FAILED, "")
    assert err == (
        f"gotstate-persist: NotFound: key '{KEY}' in namespace '{NAMESPACE}' has no version 9: "
        "its snapshots are versions 1 to 3 (3 kept); 'gotstate-persist log' lists them\n"
    )
    code, _, err = history.run(capsys, "diff", KEY, "8", "9")
    assert code == EXIT_FAILED and "has no version 8 or 9" in err
    for bad in ("0", "-2", "v1"):
        code, _, err = history.run(capsys, "diff", KEY, bad, "2")
        assert code == EXIT_USAGE and "whole number >= 1" in err
    formats = gp.FormatRegistry()
    formats.register(Invoice, kind="invoice", version=1)
    with gp.Store(
        open_backend(history.url), keyring=keyring, namespace=NAMESPACE, formats=formats
    ) as store:
        store.save("rec", Invoice(total=3))
    code, _, err = history.run(capsys, "diff", "rec", "1", "1")
    assert code == EXIT_USAGE and "not a machine snapshot" in err


# Unknown keys, wrong keyrings, the canaries.


def test_unknown_key_is_not_found_in_every_command(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ("log", "nope"),
        ("journal", "nope"),
        ("diff", "nope", "1", "2"),
        ("show", "nope", "--at", iso(START)),
    ):
        code, out, err = history.run(capsys, *argv)
        assert (code, out) == (EXIT_FAILED, ""), argv
        assert err == (
            "gotstate-persist: NotFound: key 'nope' has no snapshot and no journal entry in "
            f"namespace '{NAMESPACE}'; check its spelling and --namespace "
            "('gotstate-persist ls' lists keys)\n"
        ), argv
    capsys.readouterr()
    keys = ["--keys", str(history.keys)]
    assert main(["log", history.url, KEY, *keys]) == EXIT_FAILED  # in 'default', not 'orders'
    assert "namespace 'orders' has it: pass --namespace orders" in capsys.readouterr().err
    code, _, err = history.run(capsys, "log", "bad\x00key")
    assert code == EXIT_USAGE


def test_a_key_with_journal_entries_only(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal whose snapshots are gone: log reads it; diff and --at say why they cannot."""
    history = populate(sqlite_url, keyring, tmp_path / "keys.json")
    with open_backend(sqlite_url) as backend:
        for ref in history.versions:
            backend.delete(NAMESPACE, KEY, [ref.version])
    code, out, _ = history.run(capsys, "log", KEY)
    assert code == EXIT_OK and [row[1] for row in cells(out)[1:]] == ["1", "2", "3", "4", "5"]
    code, _, err = history.run(capsys, "diff", KEY, "1", "2")
    assert code == EXIT_FAILED and "has no version 1 or 2: it has journal entries but no" in err
    code, _, err = history.run(capsys, "show", KEY, "--at", "2999-01-01T00:00:00Z")
    assert code == EXIT_FAILED and "it has journal entries but no snapshot yet" in err


def test_wrong_keyring_and_listings_never_print_data_or_meta(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    every = [
        ("log", KEY),
        ("journal", KEY),
        ("journal", KEY, "--json"),
        ("diff", KEY, "1", "3"),
        ("show", KEY, "--at", "2999-01-01T00:00:00Z"),
    ]
    intruder = tmp_path / "other-keys.json"
    intruder.write_text(gp.KeyRing.generate().export(), encoding="utf-8")
    wrong = History(history.url, intruder, [], [])
    for argv in every:
        code, out, err = wrong.run(capsys, *argv)
        assert code == EXIT_FAILED, argv
        assert err.startswith("gotstate-persist: IntegrityError: "), argv
        assert DATA_CANARY not in out + err and META_CANARY not in out + err
    for argv in (("log", KEY), ("log", KEY, "--json"), ("diff", KEY, "1", "2")):
        code, out, err = history.run(capsys, *argv)
        assert code == EXIT_OK
        assert DATA_CANARY not in out + err and META_CANARY not in out + err, argv
    # show and journal print state data and meta as show always has
    code, out, _ = history.run(capsys, "journal", KEY)
    assert META_CANARY in out


# Other backends, once each.


def _round_trip(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = history.run(capsys, "log", KEY)
    assert code == EXIT_OK
    assert [row if row[1] != "-" else row[:3] for row in cells(out)[1:]] == expected_log(history)
    code, out, _ = history.run(capsys, "journal", KEY, "--since", "4")
    assert [row[:6] for row in cells(out)[1:]] == [
        ["5", iso(history.entries[4].at), "ship", "0", "packed", "shipped"]
    ]
    code, out, _ = history.run(capsys, "diff", KEY, "1", "3")
    assert cells(out)[1] == ["current_state", "changed", '"cart"', '"shipped"']
    moment = between(history.entries[2].at, history.entries[3].at)
    code, out, _ = history.run(capsys, "show", KEY, "--at", iso(moment))
    assert [x["seq"] for x in json.loads(out)["journal"]] == [2, 3]


def test_on_postgresql(
    pg_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _round_trip(populate(pg_url, keyring, tmp_path / "keys.json"), capsys)


@pytest.fixture
def s3_endpoint(
    s3_url: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The command has no storage options: botocore reads the endpoint from the environment."""
    url, options = s3_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", options["endpoint_url"])
    yield url, options


def test_on_s3(
    s3_endpoint: tuple[str, dict[str, Any]],
    keyring: gp.KeyRing,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, options = s3_endpoint
    _round_trip(populate(url, keyring, tmp_path / "keys.json", **options), capsys)


def test_ls_lists_a_key_that_has_only_journal_entries(
    history: History, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    with _open(history.url, keyring, {}) as store:
        store.backend.delete(NAMESPACE, KEY)  # its snapshots: the journal stays
        assert store.keys() == [KEY]
    capsys.readouterr()
    assert main(["ls", history.url, "--namespace", NAMESPACE]) == EXIT_OK
    out = capsys.readouterr().out
    [row] = [row for row in cells(out)[1:] if row[1] == KEY]
    assert row[2:5] == ["0", "-", "gotstate.journal"]


class Parcel(msgspec.Struct, frozen=True):
    weight: int


def test_journal_shows_an_entry_whose_struct_this_tool_cannot_rebuild(
    history: History, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = gp.FormatRegistry()
    formats.register(Parcel, kind="test.parcel", version=1)
    with gp.Store(
        open_backend(history.url), keyring=keyring, namespace=NAMESPACE, formats=formats
    ) as store:
        attached = store.open_machine("parcel-1", build_order_machine, journal=True)
        assert attached.process_event(Event("start"), meta={"parcel": Parcel(3), "actor": "api"})
    code, out, _ = history.run(capsys, "journal", "parcel-1", "--json")
    assert code == EXIT_OK  # the CLI has no --formats here: the Struct is named, not read
    [entry] = json.loads(out)["entries"]
    assert entry["meta"]["parcel"]["$undecodable"]["kind"] == "test.parcel"
    assert "test.parcel" in json.dumps(entry)
    assert "api" in json.dumps(entry)
