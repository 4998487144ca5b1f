"""Every ``--json`` document has the shape docs/json.md documents, on a real store.

Each document is parsed into Structs written from docs/json.md (``_json_shapes``) with
``forbid_unknown_fields=True``: an undocumented key or a wrong type fails
here. Values are checked too: exact types tagged (``{"$decimal": "19.99"}``),
times with an offset, sizes as integers, key ids as the tables print them,
and never a secret or a URL's password.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
import pytest
from _json_shapes import (
    ConfigDiffDoc,
    ConfigExplainDoc,
    ConfigGetDoc,
    ConfigHistoryDoc,
    ConfigLsDoc,
    ConfigRollbackDoc,
    ConfigWrittenDoc,
    DiffDoc,
    Doc,
    ExtChangeDoc,
    ExtDoctorDoc,
    ExtHistoryDoc,
    ExtLsDoc,
    ExtShowDoc,
    ExtVerifyDoc,
    JournalDoc,
    LogDoc,
    LogSnapshot,
    LsDoc,
    RecordShowDoc,
    ShowAtDoc,
    ShowDoc,
    UsageDoc,
    VerifyDoc,
    VersionsDoc,
)
from gotstate.core.events import Event
from order_workflow import build_order_machine, set_data
from test_cli_ext import FAST_OPTIONS, THROTTLE
from test_cli_history import KEY, NAMESPACE, History, populate

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.cli import main

SECRET_CANARY = "cnry-json-secret-Q7v3"


class Db(msgspec.Struct, frozen=True):
    host: str = "localhost"
    port: int = 5432


class Payments(msgspec.Struct, frozen=True):
    """The configuration schema (``--schema test_cli_json:Payments``)."""

    endpoint: str
    api_token: gp.Secret = gp.Secret("")
    db: Db = Db()


# Running the commands.

D = TypeVar("D", bound=Doc)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def parsed(out: str, shape: type[D], command: str) -> D:
    """``out`` as one document of ``shape`` (unknown keys and wrong types fail) for ``command``."""
    document = msgspec.json.decode(out.encode(), type=shape)
    assert document.command == command
    return document


def has_offset(text: str) -> bool:
    return datetime.fromisoformat(text).utcoffset() is not None


def store_payments(url: str, keyring: gp.KeyRing, token: str) -> None:
    with gp.open_store(url, namespace=NAMESPACE, keyring=keyring) as store:
        store.config.define("payments", Payments)
        store.config.put(
            "payments", Payments("https://pay", gp.Secret(token)), expected_version=0, reason="a"
        )
        store.config.put(
            "payments",
            Payments("https://pay2", gp.Secret(token + "-2"), Db(port=6000)),
            expected_version=1,
            reason="b",
        )


@pytest.fixture
def history(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path) -> History:
    found = populate(sqlite_url, keyring, tmp_path / "keys.json")
    store_payments(sqlite_url, keyring, SECRET_CANARY)
    return found


def where(history: History) -> list[str]:
    return ["--namespace", NAMESPACE, "--keys", str(history.keys)]


def test_ls_versions_show(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    url = history.url
    code, out, _ = run(capsys, "ls", url, "--json")
    ls = parsed(out, LsDoc, "ls")
    [key] = [item for item in ls.keys if item.key == KEY]
    assert (key.namespace, key.versions, key.newest, key.kind) == (
        NAMESPACE,
        3,
        3,
        "gotstate.machine",
    )
    assert key.size == history.versions[-1].size and has_offset(key.saved)

    code, out, _ = run(capsys, "versions", url, KEY, "--namespace", NAMESPACE, "--json")
    versions = parsed(out, VersionsDoc, "versions")
    assert [item.version for item in versions.versions] == [1, 2, 3]
    assert [item.size for item in versions.versions] == [ref.size for ref in history.versions]
    assert all(has_offset(item.saved) for item in versions.versions)
    key_id = versions.versions[0].key_id
    assert key_id.startswith("0x") and len(key_id) == 10
    code, table, _ = run(capsys, "versions", url, KEY, "--namespace", NAMESPACE)
    assert code == 0 and table.splitlines()[0].split()[:2] == ["VERSION", "SIZE"]
    assert key_id in table.splitlines()[1]

    code, out, _ = run(capsys, "show", url, KEY, *where(history), "--version", "1", "--json")
    show = parsed(out, ShowDoc, "show")
    assert show.record.state_data["cart"]["total"] == {"$decimal": "9.99"}
    assert show.sealed_with.endswith(key_id) and has_offset(show.saved)
    code, text, _ = run(capsys, "show", url, KEY, *where(history), "--version", "1")
    assert json.loads(text) == {
        k: v for k, v in json.loads(out).items() if k not in Doc.__struct_fields__
    }
    assert "Decimal(" not in text

    at = history.entries[1].at.isoformat()
    code, out, _ = run(capsys, "show", url, KEY, *where(history), "--at", at, "--json")
    show_at = parsed(out, ShowAtDoc, "show")
    assert [entry.seq for entry in show_at.journal] == [2] and has_offset(show_at.at)


def test_log_journal_diff(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    url = history.url
    code, out, _ = run(capsys, "log", url, KEY, *where(history), "--json")
    log = parsed(out, LogDoc, "log")
    assert [type(item) for item in log.items].count(LogSnapshot) == 3
    assert all(has_offset(item.at) for item in log.items)

    code, out, _ = run(capsys, "journal", url, KEY, *where(history), "--json")
    journal = parsed(out, JournalDoc, "journal")
    assert [entry.seq for entry in journal.entries] == [1, 2, 3, 4, 5]
    assert journal.entries[0].meta["actor"] == "api"

    code, out, _ = run(capsys, "diff", url, KEY, "1", "2", *where(history), "--json")
    diff = parsed(out, DiffDoc, "diff")
    assert code == 0 and (diff.old, diff.new) == (1, 2)
    changes = {change.path: change for change in diff.changes}
    total = changes["state_data.cart.total"]
    assert (total.old, total.new) == ({"$decimal": "9.99"}, {"$decimal": "12.50"})


def test_usage_and_verify(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    url = history.url
    code, out, _ = run(capsys, "quota", "set", url, "--namespace", NAMESPACE, "--max-keys", "100")
    assert code == 0
    for extra in ([], ["--recount"]):
        code, out, _ = run(capsys, "usage", url, "--json", *extra)
        usage = parsed(out, UsageDoc, "usage")
        assert usage.recounted == bool(extra)
        [orders] = [item for item in usage.namespaces if item.namespace == NAMESPACE]
        assert orders.bytes > 0 and orders.keys >= 1
        assert orders.quota is not None and orders.quota.max_keys == 100

    code, out, _ = run(capsys, "verify", url, "--keys", str(history.keys), "--json")
    verify = parsed(out, VerifyDoc, "verify")
    assert code == 0 and verify.failed == 0 and verify.verified == verify.checked > 0
    assert all(item.ok and not item.problems for item in verify.keys)
    [sealing] = verify.key_ids
    assert sealing.primary and sealing.key_id.startswith("0x")


def test_config_commands(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    url, args = history.url, where(history)
    code, out, _ = run(capsys, "config", "ls", url, *args, "--json")
    [listed] = parsed(out, ConfigLsDoc, "config ls").configurations
    assert (listed.name, listed.version, listed.reason) == ("payments", 2, "b")
    assert has_offset(listed.changed_at)

    code, out, _ = run(capsys, "config", "get", url, "payments", *args, "--json")
    got = parsed(out, ConfigGetDoc, "config get")
    assert got.value == {
        "endpoint": "https://pay2",
        "api_token": {"$secret": "**********"},
        "db": {"host": "localhost", "port": 6000},
    }
    code, out, _ = run(capsys, "config", "history", url, "payments", *args, "--json")
    assert [ref.version for ref in parsed(out, ConfigHistoryDoc, "config history").versions] == [
        1,
        2,
    ]
    code, out, _ = run(capsys, "config", "diff", url, "payments", "1", "2", *args, "--json")
    changes = {c.path: c for c in parsed(out, ConfigDiffDoc, "config diff").changes}
    assert changes["$.api_token"].new == {"$secret": "**********"}
    assert (changes["$.db.port"].old, changes["$.db.port"].new) == (5432, 6000)
    schema = ["--schema", "test_cli_json:Payments"]
    code, out, _ = run(capsys, "config", "explain", url, "payments", *args, *schema, "--json")
    fields = {f.path: f for f in parsed(out, ConfigExplainDoc, "config explain").fields}
    assert fields["$.api_token"].value == {"$secret": "**********"}

    code, out, _ = run(
        capsys, "config", "rollback", url, "payments", *args, *schema,
        "--to", "1", "--expected-version", "2", "--json",
    )  # fmt: skip
    rolled = parsed(out, ConfigRollbackDoc, "config rollback")
    assert (rolled.version, rolled.to) == (3, 1)
    code, out, _ = run(
        capsys,
        "config",
        "watch",
        url,
        "payments",
        *args,
        "--since",
        "1",
        "--timeout",
        "0",
        "--json",
    )
    assert code == 0
    lines = [msgspec.json.decode(line, type=ConfigWrittenDoc) for line in out.splitlines()]
    assert [line.version for line in lines] == [2, 3] and lines[0].command == "config watch"
    assert SECRET_CANARY not in out


def test_ext_commands(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    url, args = history.url, where(history)
    code, out, err = run(capsys, "ext", "register", url, THROTTLE, *args, *FAST_OPTIONS, "--json")
    assert code == 0, err
    registered = parsed(out, ExtChangeDoc, "ext register")
    assert registered.written and registered.registration.name == "throttle"
    assert has_offset(registered.registration.changed_at)
    code, out, _ = run(capsys, "ext", "ls", url, *args, "--json")
    [listed] = parsed(out, ExtLsDoc, "ext ls").extensions
    assert listed.revision == registered.registration.revision
    code, out, _ = run(capsys, "ext", "show", url, "throttle", *args, "--json")
    assert parsed(out, ExtShowDoc, "ext show").registration == listed
    code, out, _ = run(capsys, "ext", "history", url, "throttle", *args, "--json")
    assert len(parsed(out, ExtHistoryDoc, "ext history").revisions) == 1
    code, out, _ = run(capsys, "ext", "verify", url, *args, "--json")
    verify = parsed(out, ExtVerifyDoc, "ext verify")
    assert code == 0 and verify.matching == verify.checked == 1
    code, out, _ = run(capsys, "ext", "unregister", url, "throttle", *args, "--json")
    unregistered = parsed(out, ExtChangeDoc, "ext unregister")
    assert unregistered.written and unregistered.registration.status == "unregistered"
    code, out, _ = run(capsys, "ext", "doctor", "--json")
    assert parsed(out, ExtDoctorDoc, "ext doctor").report.uid >= 0


def test_failures_with_json_are_one_stderr_line(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", history.url, "nope", *where(history), "--json")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("gotstate-persist: NotFound: ")
    code, out, err = run(capsys, "versions", history.url, "nope", "--json")
    assert (code, out, err.count("\n")) == (1, "", 1)


def test_no_document_shows_a_secret_or_the_urls_password(
    pg_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urlsplit(pg_url)
    password, port = parts.password, parts.port
    assert password and port
    key_material = json.loads(keyring.export())["keys"][0]["secret"]
    history = populate(pg_url, keyring, tmp_path / "keys.json")
    store_payments(pg_url, keyring, SECRET_CANARY)
    args = where(history)
    commands = [
        ["ls", pg_url, "--json"],
        ["versions", pg_url, KEY, "--namespace", NAMESPACE, "--json"],
        ["show", pg_url, KEY, *args, "--json"],
        ["log", pg_url, KEY, *args, "--json"],
        ["journal", pg_url, KEY, *args, "--json"],
        ["diff", pg_url, KEY, "1", "3", *args, "--json"],
        ["usage", pg_url, "--json"],
        ["verify", pg_url, "--keys", str(history.keys), "--json"],
        ["config", "ls", pg_url, *args, "--json"],
        ["config", "get", pg_url, "payments", *args, "--json"],
        ["config", "history", pg_url, "payments", *args, "--json"],
        ["config", "diff", pg_url, "payments", "1", "2", *args, "--json"],
        [
            "config",
            "explain",
            pg_url,
            "payments",
            *args,
            "--schema",
            "test_cli_json:Payments",
            "--json",
        ],
        ["ext", "ls", pg_url, *args, "--json"],
        ["show", pg_url, "missing", *args, "--json"],  # a failure: the stderr line
        ["ls", pg_url.replace(f":{port}/", ":1/"), "--json"],  # cannot connect
    ]
    for argv in commands:
        code, out, err = run(capsys, *argv)
        assert SECRET_CANARY not in out + err, argv
        assert password not in out + err, argv
        assert key_material not in out + err
        if code == 0:
            json.loads(out)
        else:
            assert out == "" and err.count("\n") == 1, (argv, err)


class Parcel(msgspec.Struct, frozen=True):
    weight: Decimal


def test_an_unknown_struct_hides_only_itself_in_show_and_diff(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = gp.FormatRegistry()
    formats.register(Parcel, kind="test.parcel", version=1)
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    set_data(machine, "cart", "parcel", Parcel(Decimal("1.5")))
    set_data(machine, "cart", "total", Decimal("19.99"))
    set_data(machine, "cart", "by_size", {1: "small"})
    with gp.Store(open_backend(sqlite_url), keyring=keyring, formats=formats) as store:
        store.save_machine("order-7", machine)
        set_data(machine, "cart", "by_size", {1: "large"})
        store.save_machine("order-7", machine)
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export())
    code, out, _ = run(capsys, "show", sqlite_url, "order-7", "--keys", str(keys))
    assert code == 0 and "Decimal(" not in out
    cart = json.loads(out)["record"]["state_data"]["cart"]  # the CLI knows no Parcel
    assert cart["parcel"]["$undecodable"]["kind"] == "test.parcel"
    assert cart["total"] == {"$decimal": "19.99"}
    assert cart["by_size"] == {"$dict": [[1, "large"]]}
    code, out, _ = run(
        capsys, "diff", sqlite_url, "order-7", "1", "2", "--keys", str(keys), "--json"
    )
    [change] = parsed(out, DiffDoc, "diff").changes
    assert change.path == "state_data.cart"  # compared whole: this tool cannot decode it all
    assert change.old["by_size"] == {"$dict": [[1, "small"]]}
    assert change.new["parcel"]["$undecodable"]["kind"] == "test.parcel"


class Invoice(msgspec.Struct, frozen=True):
    total: Decimal
    lines: tuple[str, ...]


def test_show_of_a_record_of_a_kind_the_cli_does_not_know(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    formats = gp.FormatRegistry()
    formats.register(Invoice, kind="test.invoice", version=1)
    with gp.Store(open_backend(sqlite_url), keyring=keyring, formats=formats) as store:
        store.save("invoice-1", Invoice(Decimal("19.99"), ("a", "b")))
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export())
    code, out, _ = run(capsys, "show", sqlite_url, "invoice-1", "--keys", str(keys), "--json")
    shown = parsed(out, RecordShowDoc, "show")
    assert code == 0 and shown.kind == "test.invoice" and "not registered" in shown.note
    assert "Decimal(" not in out and json.dumps(shown.record)


def test_verify_json_names_each_failure(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(history.url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE gotstate_persist_records SET blob = "
            "CAST(substr(blob, 1, 20) || X'00' || substr(blob, 22) AS BLOB) "
            "WHERE key=? AND version=1",
            (KEY,),
        )
    code, out, err = run(capsys, "verify", history.url, "--keys", str(history.keys), "--json")
    verify = parsed(out, VerifyDoc, "verify")
    assert (code, err) == (1, "") and verify.failed == 1
    [bad] = [item for item in verify.keys if not item.ok]
    assert bad.key == KEY and bad.problems[0].startswith("version 1: IntegrityError")
