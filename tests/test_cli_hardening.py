"""The command line under hostile and careless use (issue 11, part 4, and copy to memory://).

Every test asserts what the operator sees (exit status, one clear line) and
that nothing was written or created where nothing should have been.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import gotstate_persist as gp
from gotstate_persist.cli import main
from gotstate_persist.cli._progress import ProgressDisplay
from gotstate_persist.migrations._quiet import quiet_alembic

NAMESPACES = ("orders", "billing")
#: Sets a terminal's title and clears its screen, if a terminal ever receives it raw.
ESCAPE = "\x1b]0;pwned\x07\x1b[2J"


class Note(msgspec.Struct):
    text: str


def _formats() -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    formats.register(Note, kind="note")
    return formats


def _fill(url: str, keyring: gp.KeyRing, namespaces: tuple[str, ...] = NAMESPACES) -> None:
    for namespace in namespaces:
        with gp.open_store(url, namespace=namespace, keyring=keyring, formats=_formats()) as s:
            s.save("n-1", Note("one"))
            s.save("n-2", Note("two"))


def _digest(path: Path) -> str:
    """Every stored blob of a SQLite store, to show that a command wrote nothing."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT namespace, key, version, blob FROM gotstate_persist_records "
            "ORDER BY namespace, key, version"
        ).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _keys_file(tmp_path: Path, keyring: gp.KeyRing, name: str = "keys.json") -> Path:
    path = tmp_path / name
    path.write_text(keyring.export())
    path.chmod(0o600)
    return path


@pytest.fixture
def filled(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path) -> tuple[str, Path, Path]:
    """(url, database file, keys file) of a store with two namespaces of two records."""
    _fill(sqlite_url, keyring)
    return sqlite_url, Path(sqlite_url.removeprefix("sqlite:///")), _keys_file(tmp_path, keyring)


# ---------------------------------------------------------------- namespaces

BAD_NAMESPACES = {"empty": "", "too long": "n" * 256, "control": "a\x1b[2Jb"}


@pytest.mark.parametrize("bad", BAD_NAMESPACES.values(), ids=BAD_NAMESPACES.keys())
@pytest.mark.parametrize(
    "command",
    [
        ["ls"],
        ["verify"],
        ["usage"],
        ["reseal"],
        ["migrate", "--kind", "note", "--formats", "gsp_no_such_module:formats"],
        ["show", "n-1"],
        ["quota"],
    ],
    ids=lambda command: command[0],
)
def test_a_bad_namespace_is_a_usage_error_and_changes_nothing(
    filled: tuple[str, Path, Path],
    command: list[str],
    bad: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, db, keys = filled
    before = _digest(db)
    argv = ["quota", "show", url] if command == ["quota"] else [command[0], url, *command[1:]]
    if command[0] in ("verify", "reseal", "migrate", "show"):
        argv += ["--keys", str(keys)]
    assert main([*argv, "--namespace", bad]) == 2
    err = capsys.readouterr().err
    assert "namespace" in err and "Traceback" not in err
    assert "\x1b" not in err
    assert _digest(db) == before


def test_an_empty_namespace_hints_at_an_unset_variable(
    filled: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    assert main(["copy", url, f"sqlite:///{keys.parent / 'b.db'}", "--namespace", ""]) == 2
    assert "unset" in capsys.readouterr().err
    assert not (keys.parent / "b.db").exists()


def test_rewrites_and_copy_take_every_namespace_only_when_asked(
    filled: tuple[str, Path, Path], keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url, db, keys = filled
    keyring.rotate()
    keys.write_text(keyring.export())
    before = _digest(db)
    destination = keys.parent / "copy.db"
    for argv in (["reseal", url], ["copy", url, f"sqlite:///{destination}"]):
        assert main([*argv, "--keys", str(keys)]) == 2
        assert "--all-namespaces" in capsys.readouterr().err
    assert _digest(db) == before
    assert not destination.exists()

    assert main(["reseal", url, "--keys", str(keys), "--namespace", "orders"]) == 0
    captured = capsys.readouterr()
    assert "namespace 'orders': scanned 2, rewrote 2" in captured.out
    assert "'billing'" in captured.err and "--all-namespaces" in captured.err  # what it left out
    assert main(["reseal", url, "--keys", str(keys), "--all-namespaces"]) == 0
    out = capsys.readouterr().out
    assert "namespace 'billing': scanned 2, rewrote 2" in out
    assert "namespace 'orders': scanned 2, rewrote 0, 2 already current" in out


def test_show_reads_the_default_namespace_and_says_where_a_key_is(
    filled: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    assert main(["show", "--help"]) == 0
    assert "(default: default)" in " ".join(capsys.readouterr().out.split())
    assert main(["show", url, "n-1", "--keys", str(keys)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gotstate-persist: NotFound:")
    assert "not in namespace 'default'" in err and "'orders'" in err
    assert "--namespace billing" in err or "--namespace orders" in err
    assert main(["show", url, "n-1", "--keys", str(keys), "--namespace", "orders"]) == 0


def test_ls_of_an_empty_namespace_names_the_others(
    filled: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = filled
    assert main(["ls", url, "--namespace", "default"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "(no records)\n"
    assert "'billing', 'orders'" in captured.err or "'orders', 'billing'" in captured.err


# ---------------------------------------------------- one line, not a traceback


def test_a_keys_file_that_is_not_utf8_is_one_clear_line(
    filled: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = filled
    latin1 = tmp_path / "keys.latin1"
    latin1.write_bytes(b'{"format": "gotstate-persist-keyring", "x": "\xe9\xff"}')
    assert main(["verify", url, "--keys", str(latin1)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8" in err and str(latin1) in err


def test_a_huge_keys_file_is_refused_unread(
    filled: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = filled
    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:
        file.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    assert main(["verify", url, "--keys", str(huge)]) == 2
    assert "not an exported keyring" in capsys.readouterr().err


@pytest.fixture
def catalog_store(tmp_path: Path, keyring: gp.KeyRing) -> tuple[str, str]:
    url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'catalog.db'}"
    with gp.open_store(
        url, namespace="orders", keyring=keyring, formats=_formats(), catalog=catalog
    ) as store:
        store.save("n-1", Note("one"))
    return url, catalog


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "1e300", "-1", "soon"])
def test_gc_older_than_must_be_a_finite_number_of_seconds(
    catalog_store: tuple[str, str], seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, catalog = catalog_store
    assert main(["gc", url, "--catalog", catalog, f"--older-than={seconds}"]) == 2
    err = capsys.readouterr().err
    assert "--older-than" in err and "Traceback" not in err


FAILING_APP = textwrap.dedent(
    """
    import gotstate_persist as gp

    def formats():
        raise RuntimeError("the application's own bug")

    def working():
        return gp.FormatRegistry()

    def needs_arguments(path):
        return gp.FormatRegistry()
    """
)


@pytest.fixture
def failing_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "gsp_failing_app.py").write_text(FAILING_APP)
    (tmp_path / "gsp_broken_app.py").write_text("raise ZeroDivisionError('at import')\n")
    (tmp_path / "gsp_exiting_app.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("gsp_failing_app", "gsp_broken_app", "gsp_exiting_app"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("gsp_failing_app:formats", "RuntimeError: the application's own bug"),
        ("gsp_failing_app:needs_arguments", "TypeError"),
        ("gsp_broken_app:formats", "ZeroDivisionError: at import"),
        ("gsp_exiting_app:formats", "SystemExit"),
    ],
)
def test_formats_that_raise_are_one_clear_line(
    filled: tuple[str, Path, Path],
    failing_app: None,
    target: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, db, keys = filled
    before = _digest(db)
    argv = ["migrate", url, "--kind", "note", "--formats", target, "--keys", str(keys), "-A"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "--formats" in err
    assert _digest(db) == before


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["show", "{url}", "n-1", "--namespace", "orders", "--version", "0"], 2),
        (["show", "{url}", "n-1", "--namespace", "orders", "--version", "x"], 2),
        (["show", "{url}", "bad\x00key", "--namespace", "orders"], 2),
        (["reseal", "{url}", "-A", "--batch-size", "0"], 2),
        (["reseal", "{url}", "-A", "--batch-size", "-3"], 2),
        (["migrate", "{url}", "-A", "--kind", "nope", "--formats", "gsp_failing_app:working"], 2),
        (["ls", "{url}", "--prefix", "\x00"], 0),
        (["keys", "generate", "--algorithm", "rot13"], 2),
        (["keys", "rotate", "{keys}", "--algorithm", "rot13"], 2),
        (["keys", "rotate", "{missing}"], 2),
        (["keys", "retire", "{keys}", "0xnothex", "--url", "{url}"], 2),
    ],
)
def test_other_bad_option_values_are_usage_errors(
    filled: tuple[str, Path, Path],
    failing_app: None,
    argv: list[str],
    status: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, db, keys = filled
    before, keyring_before = _digest(db), keys.read_bytes()
    filled_in = [arg.format(url=url, keys=keys, missing=keys.parent / "none") for arg in argv]
    if argv[0] in ("show", "reseal", "migrate"):
        filled_in += ["--keys", str(keys)]
    assert main(filled_in) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and bool(err) == (status != 0)
    assert _digest(db) == before and keys.read_bytes() == keyring_before


def test_unknown_arguments_are_echoed_escaped(
    filled: tuple[str, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = filled
    assert main(["ls", url, f"extra{ESCAPE}"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and "\x1b" not in err and "\x07" not in err


def test_a_reader_that_goes_away_stops_the_command_quietly(
    filled: tuple[str, Path, Path],
) -> None:
    url, _, _ = filled
    exe = Path(sys.executable).parent / "gotstate-persist"
    command = subprocess.Popen(
        [str(exe), "ls", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()  # as `| head -0` does, long before ls prints
    err = command.stderr.read().decode()
    assert command.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


# ---------------------------------------------------- reads never create anything


@pytest.mark.parametrize(
    "command",
    [["ls"], ["verify"], ["usage"], ["usage", "--recount"], ["show", "n-1"], ["quota", "show"]],
    ids=" ".join,
)
def test_reads_with_a_catalog_never_create_a_misspelled_store_directory(
    catalog_store: tuple[str, str],
    tmp_path: Path,
    keyring: gp.KeyRing,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, catalog = catalog_store
    misspelled = tmp_path / "blbos"
    url = f"file://{misspelled}"
    argv = [*command, url] if command[0] == "quota" else [command[0], url, *command[1:]]
    argv += ["--catalog", catalog, "--namespace", "orders"]
    if command[0] in ("verify", "show"):
        argv += ["--keys", str(_keys_file(tmp_path, keyring))]
    assert main(argv) == 2
    assert "no store directory" in capsys.readouterr().err
    assert not misspelled.exists()


def test_reads_of_a_missing_local_store_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "store"
    for argv in (["ls", f"file://{missing}"], ["usage", f"file://{missing}"]):
        assert main(argv) == 2
        assert "no store directory" in capsys.readouterr().err
    assert main(["ls", f"sqlite:///{missing}.db"]) == 2
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("scheme", ["file:///", "sqlite:///"])
def test_a_path_no_file_system_accepts_is_one_short_line(
    scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", scheme + "d" * 100_000]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400 and "File name too long" in err


@pytest.mark.parametrize("url", ["memory://state", "sqlite://", "sqlite:///:memory:"])
def test_reading_a_store_that_lives_in_another_process_memory_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", url]) == 2
    assert "memory of the process" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_db_upgrade_refuses_a_database_that_dies_with_the_command(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", url]) == 2
    assert "memory of the process" in capsys.readouterr().err


# ----------------------------------------------------------- copy to memory://


@pytest.mark.parametrize(
    "destination", ["memory://x", "memory://", "sqlite://", "sqlite:///:memory:"]
)
def test_copy_refuses_a_destination_that_dies_with_the_process(
    filled: tuple[str, Path, Path], destination: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    assert main(["copy", url, destination, "--keys", str(keys), "--namespace", "orders"]) == 2
    captured = capsys.readouterr()
    assert "would be lost when it exits" in captured.err and captured.err.count("\n") == 1
    assert "copied" not in captured.out


def test_copy_refuses_an_in_memory_destination_catalog(
    filled: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    target = tmp_path / "objects"
    argv = ["copy", url, f"file://{target}", "--to-catalog", "sqlite://", "--keys", str(keys)]
    assert main([*argv, "--namespace", "orders"]) == 2
    assert "would be lost" in capsys.readouterr().err
    assert not target.exists()


# -------------------------------------------------- stored names reach terminals escaped


@pytest.fixture
def hostile_names(filled: tuple[str, Path, Path]) -> tuple[str, Path]:
    """Rename a key and a namespace, as another tool with database access could."""
    url, db, keys = filled
    with sqlite3.connect(db) as conn:
        for table in ("gotstate_persist_records", "gotstate_persist_keys"):
            conn.execute(f"UPDATE {table} SET key = ? WHERE key = 'n-2'", (f"k{ESCAPE}",))
            conn.execute(
                f"UPDATE {table} SET namespace = ? WHERE namespace = 'billing'", (f"b{ESCAPE}\x9b",)
            )
    return url, keys


def test_ls_escapes_stored_names(
    hostile_names: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = hostile_names
    assert main(["ls", url]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "k\\x1b]0;pwned\\x07\\x1b[2J" in out
    assert "b\\x1b]0;pwned\\x07\\x1b[2J\\x9b" in out


def test_verify_escapes_stored_names(
    hostile_names: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys = hostile_names
    assert main(["verify", url, "--keys", str(keys)]) == 1
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\x1b" not in stream and "\x07" not in stream and "\x9b" not in stream
    assert "\\x1b]0;pwned" in captured.out


def test_show_escapes_what_a_record_holds_and_stays_json(
    sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f"hello{ESCAPE}\x9b\u202e\U000e0041"
    with gp.open_store(sqlite_url, keyring=keyring, formats=_formats()) as store:
        store.save("note", Note(text))
    keys = _keys_file(tmp_path, keyring)
    assert main(["show", sqlite_url, "note", "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert out.replace("\n", "").isprintable()
    assert json.loads(out)["record"] == {"text": text}


# ------------------------------------------------------------------ key ids


def test_key_ids_print_in_one_form_everywhere(
    filled: tuple[str, Path, Path], keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    shown = f"0x{keyring.primary_id:08x}"
    assert main(["verify", url, "--keys", str(keys)]) == 0
    assert f"records per key id: {shown} (primary): 4" in capsys.readouterr().out
    assert main(["show", url, "n-1", "--namespace", "orders", "--keys", str(keys)]) == 0
    assert json.loads(capsys.readouterr().out)["sealed_with"] == f"aes-256-gcm key {shown}"
    assert f"primary={shown}" in repr(keyring)


def test_an_unknown_key_id_is_named(
    filled: tuple[str, Path, Path],
    keyring: gp.KeyRing,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _, _ = filled
    other = _keys_file(tmp_path, gp.KeyRing.generate(), "other.json")
    assert main(["verify", url, "--keys", str(other)]) == 1
    assert f"names key id 0x{keyring.primary_id:08x}" in capsys.readouterr().out


@pytest.mark.parametrize("value", [None, "", "   ", "{not a keyring"])
def test_a_missing_or_malformed_keyring_points_at_the_existing_one_first(
    filled: tuple[str, Path, Path],
    value: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _, _ = filled
    if value is None:
        monkeypatch.delenv("GOTSTATE_PERSIST_KEYS", raising=False)
    else:
        monkeypatch.setenv("GOTSTATE_PERSIST_KEYS", value)
    assert main(["verify", url]) == 2
    err = capsys.readouterr().err
    assert "cannot open existing data" in err
    generate = err.index("keys generate")
    if value is None or not value.strip():
        assert err.index("--keys FILE") < generate
        assert err.index("GOTSTATE_PERSIST_KEYS") < generate
    else:
        assert err.startswith("gotstate-persist: $GOTSTATE_PERSIST_KEYS: malformed keyring")
        assert err.index("the keyring the data was sealed with") < generate


# ------------------------------------------------------------ keys rotate / retire


def test_keys_rotate_rewrites_the_file_atomically_keeping_its_mode(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _keys_file(tmp_path, keyring)
    path.chmod(0o640)
    old = keyring.primary_id
    assert main(["keys", "rotate", str(path)]) == 0
    out = capsys.readouterr().out
    rotated = gp.KeyRing.load(path.read_text())
    assert rotated.primary_id != old and set(rotated.key_ids) == {old, rotated.primary_id}
    assert f"new primary key 0x{rotated.primary_id:08x}" in out
    assert f"keys retire {path} 0x{old:08x}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]  # no temporary left
    assert rotated.export() not in out  # key material is never printed


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_keys_rotate_by_root_keeps_the_service_owner(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _keys_file(tmp_path, keyring)
    os.chown(path, 4321, 4322)
    assert main(["keys", "rotate", str(path)]) == 0
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keys_rotate_follows_a_symlink_and_keeps_it(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _keys_file(tmp_path, keyring, "real.json")
    link = tmp_path / "keys.json"
    link.symlink_to(target)
    assert main(["keys", "rotate", str(link), "--algorithm", "chacha20-poly1305"]) == 0
    assert link.is_symlink()
    rotated = gp.KeyRing.load(target.read_text())
    assert rotated.algorithm == "chacha20-poly1305" and len(rotated.key_ids) == 2
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_keys_retire_refuses_a_key_that_still_seals_records(
    filled: tuple[str, Path, Path], keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    old = f"0x{keyring.primary_id:08x}"
    assert main(["keys", "rotate", str(keys)]) == 0
    capsys.readouterr()
    rotated = keys.read_bytes()

    assert main(["keys", "retire", str(keys), old, "--url", url]) == 1
    err = capsys.readouterr().err
    assert f"key {old} still seals 4 record(s)" in err and "reseal" in err
    assert keys.read_bytes() == rotated

    # one namespace resealed is not enough: the check counts every namespace
    assert main(["reseal", url, "--keys", str(keys), "--namespace", "orders"]) == 0
    assert main(["keys", "retire", str(keys), old, "--url", url]) == 1
    assert "still seals 2 record(s)" in capsys.readouterr().err
    assert keys.read_bytes() == rotated

    assert main(["reseal", url, "--keys", str(keys), "--all-namespaces"]) == 0
    capsys.readouterr()
    assert main(["keys", "retire", str(keys), old, "--url", url]) == 0
    assert f"retired key {old}" in capsys.readouterr().out
    assert len(gp.KeyRing.load(keys.read_text()).key_ids) == 1
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert main(["verify", url, "--keys", str(keys)]) == 0


def test_keys_retire_counts_every_store_given(
    filled: tuple[str, Path, Path],
    keyring: gp.KeyRing,
    catalog_store: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _, keys = filled
    objects, catalog = catalog_store
    old = f"0x{keyring.primary_id:08x}"
    assert main(["keys", "rotate", str(keys)]) == 0
    assert main(["reseal", url, "--keys", str(keys), "-A"]) == 0
    capsys.readouterr()
    argv = ["keys", "retire", str(keys), old, "--url", url, "--url", objects]
    assert main([*argv, "--catalog", catalog]) == 1
    assert "still seals 1 record(s) in file://" in capsys.readouterr().err
    assert main(["keys", "retire", str(keys), old, "--catalog", catalog, "--url", url]) == 2
    assert "--catalog must follow" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{primary}", "--url", "{url}"], "is the primary key"),
        (["0x00000001", "--url", "{url}"], "is not in"),
        (["{primary}"], "--url"),
        (["0"], "invalid key id"),
    ],
)
def test_keys_retire_refuses_the_primary_and_unknown_keys(
    filled: tuple[str, Path, Path],
    keyring: gp.KeyRing,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _, keys = filled
    before = keys.read_bytes()
    primary = f"0x{keyring.primary_id:08x}"
    filled_in = [arg.format(url=url, primary=primary) for arg in argv]
    assert main(["keys", "retire", str(keys), *filled_in]) == 2
    assert message in capsys.readouterr().err
    assert keys.read_bytes() == before


# ------------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr is for an operator at a shell."""

    def isatty(self) -> bool:
        return True


def test_progress_without_a_terminal_is_a_few_lines(
    filled: tuple[str, Path, Path], sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    clock = iter(float(second) for second in range(10_000))
    stream = io.StringIO()
    with ProgressDisplay(stream, clock=lambda: next(clock), interval_s=30) as display:
        copying = display.task("copying")
        for done in range(1, 1001):
            copying(done, 1000)
    lines = stream.getvalue().splitlines()
    assert 30 <= len(lines) <= 35  # one per 30 "seconds" of 1000, and the summary
    assert lines[-1].startswith("copying: 1000/1000 in ")

    stream = io.StringIO()
    with ProgressDisplay(stream, live=False) as display:  # many namespaces: one summary
        for namespace in range(40):
            resealing = display.task(f"reseal ns{namespace}")
            for done in range(1, 11):
                resealing(done, 10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("40 runs (reseal ns0, reseal ns1, reseal ns2, ...): 400/400 in ")


def test_copy_without_a_terminal_prints_one_summary_line(
    filled: tuple[str, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, keys = filled
    destination = f"sqlite:///{tmp_path / 'copy.db'}"
    assert main(["copy", url, destination, "--keys", str(keys), "-A"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("copying: 4/4 in ") and err.count("\n") == 1


def test_progress_on_a_terminal_is_a_live_bar() -> None:
    terminal = _Terminal()
    with ProgressDisplay(terminal) as display:
        resealing = display.task("reseal b\x1b[2J[bold]x[/bold]")
        for done in range(1, 9):
            resealing(done, 8)
    shown = terminal.getvalue()
    assert "8/8" in shown and "━" in shown  # rich's bar, redrawn in place
    assert "\x1b[2J" not in shown and "b\\x1b[2J[bold]x[/bold]" in shown  # escaped, no markup


# -------------------------------------------------------- alembic stays quiet

QUIET_APP = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    import gotstate_persist as gp
    gp.open_store(f"sqlite:///{sys.argv[1]}", keyring=gp.KeyRing.generate()).close()
    logging.getLogger("alembic.runtime.migration").info("the application's own line")
    """
)


def test_first_open_does_not_log_alembic_lines_into_the_application(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", QUIET_APP, str(tmp_path / "fresh.db")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("alembic")] == [
        "alembic.runtime.migration: the application's own line"  # its logging is untouched
    ]
    assert any(line.startswith("gotstate_persist.migrations: ") for line in lines)


def test_upgrades_in_process_log_no_alembic_records(
    tmp_path: Path, keyring: gp.KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gp.open_store(f"sqlite:///{tmp_path / 'fresh.db'}", keyring=keyring).close()
    assert [r.name for r in caplog.records if r.name.startswith("alembic")] == []
    assert main(["db", "upgrade", f"sqlite:///{tmp_path / 'other.db'}"]) == 0
    assert [r.name for r in caplog.records if r.name.startswith("alembic")] == []


def test_quieting_alembic_leaves_other_threads_and_warnings_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    alembic_log = logging.getLogger("alembic.runtime.migration")
    with quiet_alembic():
        alembic_log.info("ours, dropped")
        alembic_log.warning("ours, but a warning")
        other = threading.Thread(target=alembic_log.info, args=("another thread's",))
        other.start()
        other.join()
    alembic_log.info("after")
    assert [r.getMessage() for r in caplog.records] == [
        "ours, but a warning",
        "another thread's",
        "after",
    ]
