"""``gotstate-persist usage`` and ``gotstate-persist quota``: real SQLite, files, PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

import gotstate_persist as gp
from gotstate_persist.cli import main


class Order(msgspec.Struct):
    id: str
    total: int


FORMATS = gp.FormatRegistry()
FORMATS.register(Order, kind="order", version=1)


@pytest.fixture(params=["sqlite", "file"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return f"file://{tmp_path / 'files'}"


def fill(url: str, keyring: gp.KeyRing, namespace: str, keys: int) -> list[gp.SnapshotRef]:
    """Save one Order under each of ``keys`` keys, and a second version of the first."""
    with gp.open_store(url, namespace=namespace, keyring=keyring, formats=FORMATS) as store:
        refs = [store.save(f"o-{i}", Order(f"o-{i}", i)) for i in range(keys)]
        if keys:
            refs.append(store.save("o-0", Order("o-0", 100)))
    return refs


def usage_rows(out: str) -> dict[str, list[str]]:
    """The usage table by namespace: NAMESPACE BYTES SIZE(2 words) RECORDS KEYS [DRIFT] QUOTA."""
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:5] == ["NAMESPACE", "BYTES", "SIZE", "RECORDS", "KEYS"]
    assert header[5:] in (["QUOTA"], ["DRIFT", "QUOTA"])
    rows = {}
    for line in lines[1:]:
        if not line or line.startswith("recounted"):
            continue
        cells = re.split(r"\s{2,}", line)
        rows[cells[0]] = cells[1:]
    return rows


def stored_quota(url: str, namespace: str) -> gp.Quota | None:
    with gp.open_store(url, namespace=namespace, keyring=gp.KeyRing.generate()) as store:
        return store.quota


# usage


def test_usage_of_an_empty_then_a_filled_namespace(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    gp.open_store(url, namespace="orders", keyring=keyring).close()  # the store, no records
    assert main(["usage", url]) == 0
    assert capsys.readouterr().out == "(no namespaces)\n"
    assert main(["usage", url, "--namespace", "orders"]) == 0
    assert usage_rows(capsys.readouterr().out) == {"orders": ["0", "0 B", "0", "0", "no limits"]}

    refs = fill(url, keyring, "orders", keys=3)
    fill(url, keyring, "audit", keys=1)
    assert main(["usage", url]) == 0
    rows = usage_rows(capsys.readouterr().out)
    assert list(rows) == ["audit", "orders"]
    total = sum(ref.size for ref in refs)
    assert rows["orders"] == [str(total), f"{total} B", "4", "3", "no limits"]
    assert rows["audit"][2:4] == ["2", "1"]
    with gp.open_store(url, namespace="orders", keyring=keyring) as store:
        assert store.usage() == gp.Usage(total, 4, 3)


def test_usage_shows_large_sizes_in_binary_units(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with gp.open_store(url, namespace="big", keyring=keyring, formats=FORMATS) as store:
        ref = store.save("blob", Order("x" * 5500, 1))
    assert main(["usage", url, "--namespace", "big"]) == 0
    size_cell = usage_rows(capsys.readouterr().out)["big"][1]
    assert size_cell == f"{ref.size / 1024:.1f} KiB"
    assert size_cell.startswith("5.")


def test_usage_recount_reports_and_repairs_drift(
    sqlite_url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = fill(sqlite_url, keyring, "orders", keys=2)
    total = sum(ref.size for ref in refs)
    database = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE gotstate_persist_namespaces SET bytes = bytes + 7, keys = keys - 1")
    conn.close()

    assert main(["usage", sqlite_url]) == 0  # the kept counters, as they are
    assert usage_rows(capsys.readouterr().out)["orders"][:4] == [
        str(total + 7),
        f"{total + 7} B",
        "3",
        "1",
    ]

    assert main(["usage", sqlite_url, "--recount"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[5] == "DRIFT"
    assert usage_rows(out)["orders"] == [
        str(total),
        f"{total} B",
        "3",
        "2",
        "bytes -7, keys +1",
        "no limits",
    ]
    assert "recounted 1 namespace; repaired the counters of 1" in out
    with sqlite3.connect(database) as conn:
        kept = conn.execute(
            "SELECT bytes, records, keys FROM gotstate_persist_namespaces "
            "WHERE namespace = 'orders'"
        ).fetchone()
    conn.close()
    assert kept == (total, 3, 2)

    assert main(["usage", sqlite_url, "--recount", "--namespace", "orders"]) == 0
    out = capsys.readouterr().out
    assert usage_rows(out)["orders"][4] == "none"
    assert "the counters were exact" in out


def test_usage_recount_on_files_counts_the_stored_objects(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path / 'files'}"
    refs = fill(url, keyring, "orders", keys=2)
    assert main(["usage", url, "--recount"]) == 0
    out = capsys.readouterr().out
    total = sum(ref.size for ref in refs)
    assert usage_rows(out)["orders"][:5] == [str(total), f"{total} B", "3", "2", "none"]
    assert "keeps no shared usage counters" in out


SAVE_IN_ANOTHER_PROCESS = """
import sys, msgspec, gotstate_persist as gp
class Order(msgspec.Struct):
    id: str
    total: int
formats = gp.FormatRegistry()
formats.register(Order, kind="order", version=1)
keys = gp.KeyRing.load(sys.stdin.read())
with gp.open_store(sys.argv[1], namespace="orders", keyring=keys, formats=formats) as store:
    print(store.save("o-other", Order("o-other", 1)).size)
"""


def test_usage_on_files_counts_what_other_processes_wrote(
    tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path / 'files'}"
    refs = fill(url, keyring, "orders", keys=1)  # this process now keeps a ledger
    result = subprocess.run(
        [sys.executable, "-c", SAVE_IN_ANOTHER_PROCESS, url],
        input=keyring.export(),
        capture_output=True,
        text=True,
        check=True,
    )
    total = sum(ref.size for ref in refs) + int(result.stdout)
    assert main(["usage", url]) == 0
    assert usage_rows(capsys.readouterr().out)["orders"][:4] == [str(total), f"{total} B", "3", "2"]


def test_usage_lists_each_namespace_with_its_quota(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(url, keyring, "orders", keys=1)
    fill(url, keyring, "audit", keys=1)
    assert main(["quota", "set", url, "--namespace", "orders", "--max-records", "10"]) == 0
    capsys.readouterr()
    assert main(["usage", url]) == 0
    rows = usage_rows(capsys.readouterr().out)
    assert rows["orders"][-1] == "max_records=10"
    assert rows["audit"][-1] == "no limits"


# quota set / show / clear


def test_quota_set_show_clear_round_trip(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(url, keyring, "orders", keys=1)
    assert main(["quota", "show", url, "--namespace", "orders"]) == 0
    assert capsys.readouterr().out == "namespace 'orders': no limits\n"

    code = main(
        [
            "quota",
            "set",
            url,
            "--namespace",
            "orders",
            "--max-bytes",
            "50MB",
            "--max-records",
            "1000",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "namespace 'orders': max_bytes=50000000, max_records=1000\n"
    assert stored_quota(url, "orders") == gp.Quota(max_bytes=50_000_000, max_records=1000)

    # options given replace those limits; the others are kept
    code = main(
        [
            "quota",
            "set",
            url,
            "--namespace",
            "orders",
            "--max-blob-bytes",
            "64KiB",
            "--max-versions-per-key",
            "5",
            "--retention",
            "prune-oldest",
            "--max-writes-per-second",
            "100",
            "--max-reads-per-second",
            "200",
            "--max-keys",
            "20",
            "--max-records",
            "none",
        ]
    )
    assert code == 0
    expected = gp.Quota(
        max_bytes=50_000_000,
        max_keys=20,
        max_blob_bytes=65536,
        max_versions_per_key=5,
        retention="prune-oldest",
        max_writes_per_second=100,
        max_reads_per_second=200,
    )
    assert capsys.readouterr().out == f"namespace 'orders': {expected.describe()}\n"
    assert stored_quota(url, "orders") == expected
    assert main(["quota", "show", url, "--namespace", "orders"]) == 0
    assert capsys.readouterr().out == f"namespace 'orders': {expected.describe()}\n"

    assert main(["quota", "set", url, "--namespace", "orders", "--replace", "--max-keys", "3"]) == 0
    assert capsys.readouterr().out == "namespace 'orders': max_keys=3\n"
    assert stored_quota(url, "orders") == gp.Quota(max_keys=3)

    assert main(["quota", "clear", url, "--namespace", "orders"]) == 0
    assert "quota cleared" in capsys.readouterr().out
    assert stored_quota(url, "orders") is None
    assert main(["quota", "show", url, "--namespace", "orders"]) == 0
    assert capsys.readouterr().out == "namespace 'orders': no limits\n"
    assert main(["quota", "clear", url, "--namespace", "orders"]) == 0
    assert capsys.readouterr().out == "namespace 'orders': no quota to clear, no limits\n"


def test_quota_of_a_namespace_that_holds_nothing(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(url, keyring, "orders", keys=1)
    assert main(["quota", "clear", url, "--namespace", "new"]) == 0
    assert "no quota to clear" in capsys.readouterr().out
    assert main(["quota", "set", url, "--namespace", "new", "--max-records", "1"]) == 0
    assert capsys.readouterr().out == "namespace 'new': max_records=1\n"
    assert main(["usage", url, "--namespace", "new"]) == 0
    assert usage_rows(capsys.readouterr().out) == {"new": ["0", "0 B", "0", "0", "max_records=1"]}
    with gp.open_store(url, namespace="new", keyring=keyring, formats=FORMATS) as store:
        store.save("n-1", Order("n-1", 1))
        with pytest.raises(gp.QuotaExceeded):
            store.save("n-2", Order("n-2", 2))
    assert main(["quota", "clear", url, "--namespace", "new"]) == 0
    assert "quota cleared" in capsys.readouterr().out
    assert stored_quota(url, "new") is None


def test_quota_set_then_a_save_over_the_limit_is_refused(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(url, keyring, "orders", keys=1)  # 2 records
    assert main(["quota", "set", url, "--namespace", "orders", "--max-records", "3"]) == 0
    assert capsys.readouterr().err == ""  # not reached yet: no warning
    with gp.open_store(url, namespace="orders", keyring=keyring, formats=FORMATS) as store:
        store.save("o-1", Order("o-1", 1))
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("o-2", Order("o-2", 2))
        assert (refused.value.limit, refused.value.maximum) == ("max_records", 3)
        assert (refused.value.usage, refused.value.requested) == (3, 1)
        assert store.usage().records == 3
        assert store.keys() == ["o-0", "o-1"]
        # the message names the command that raises the limit: it works as written
        hint = re.search(r"'gotstate-persist (quota set URL .*?)'", str(refused.value))
        assert hint is not None
    argv = re.sub(r" N$", " 4", hint.group(1)).replace(" URL ", f" {url} ").split()
    assert main(argv) == 0
    assert capsys.readouterr().out == "namespace 'orders': max_records=4\n"
    with gp.open_store(url, namespace="orders", keyring=keyring, formats=FORMATS) as store:
        assert store.save("o-2", Order("o-2", 2)).version == 1


def test_quota_below_usage_warns_and_deletes_nothing(
    url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = fill(url, keyring, "orders", keys=3)  # 4 records, 3 keys
    assert main(["quota", "set", url, "--namespace", "orders", "--max-keys", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "namespace 'orders': max_keys=2\n"
    assert "already reaches max_keys=2 (3 in use)" in captured.err
    assert "nothing was deleted" in captured.err
    assert main(["quota", "set", url, "--namespace", "orders", "--max-keys", "3"]) == 0
    assert "already reaches max_keys=3 (3 in use)" in capsys.readouterr().err
    assert main(["quota", "set", url, "--namespace", "orders", "--max-keys", "2"]) == 0
    capsys.readouterr()
    with gp.open_store(url, namespace="orders", keyring=keyring, formats=FORMATS) as store:
        assert store.usage() == gp.Usage(sum(r.size for r in refs), 4, 3)
        with pytest.raises(gp.QuotaExceeded) as refused:
            store.save("o-9", Order("o-9", 9))
        assert (refused.value.limit, refused.value.usage) == ("max_keys", 3)
        assert store.keys() == ["o-0", "o-1", "o-2"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-bytes", "12XB"], "argument --max-bytes: invalid size '12XB'"),
        (["--max-bytes", "1.5B"], "not a whole number of bytes"),
        (["--max-bytes", "0"], "'0' is out of range"),
        (["--max-bytes", "-5"], "invalid size '-5'"),
        (["--max-blob-bytes", "5 M"], "invalid size '5 M'"),
        (["--max-records", "1e3"], "argument --max-records: invalid number '1e3'"),
        (["--max-records", "2.0"], "invalid number '2.0'"),
        (["--max-keys", str(2**63)], "out of range"),
        (["--max-versions-per-key", "١٢"], "invalid number"),  # Arabic-Indic digits
        (["--retention", "keep"], "argument --retention: invalid choice: 'keep'"),
        ([], "needs at least one limit option"),
        (["--retention", "prune-oldest"], "--retention applies to --max-versions-per-key"),
    ],
)
def test_bad_quota_options_are_usage_errors(
    sqlite_url: str,
    keyring: gp.KeyRing,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    fill(sqlite_url, keyring, "orders", keys=1)
    assert main(["quota", "set", sqlite_url, "--namespace", "orders", "--max-keys", "9"]) == 0
    capsys.readouterr()
    assert main(["quota", "set", sqlite_url, "--namespace", "orders", *options]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""
    assert stored_quota(sqlite_url, "orders") == gp.Quota(max_keys=9)


def test_sizes_accept_units_strictly(sqlite_url: str, keyring: gp.KeyRing) -> None:
    fill(sqlite_url, keyring, "orders", keys=1)
    for text, size in [
        ("1", 1),
        ("2048", 2048),
        ("10B", 10),
        ("3kB", 3000),
        ("64KiB", 65536),
        ("1.5GiB", 3 * 2**29),
        ("2 TB", 2 * 10**12),
        ("7mib", 7 * 2**20),
    ]:
        assert main(["quota", "set", sqlite_url, "--namespace", "orders", "--max-bytes", text]) == 0
        assert stored_quota(sqlite_url, "orders") == gp.Quota(max_bytes=size), text


def test_quota_commands_need_a_namespace_and_a_valid_one(
    sqlite_url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(sqlite_url, keyring, "orders", keys=1)
    assert main(["quota", "show", sqlite_url]) == 2
    assert "--namespace" in capsys.readouterr().err
    assert main(["quota", "show", sqlite_url, "--namespace", "bad\x01name"]) == 2
    assert "contains a control character" in capsys.readouterr().err
    assert main(["usage", sqlite_url, "--namespace", ""]) == 2
    assert "namespace must be 1 to 255 bytes" in capsys.readouterr().err


def test_console_script_exits_2_on_a_bad_size(sqlite_url: str, keyring: gp.KeyRing) -> None:
    fill(sqlite_url, keyring, "orders", keys=1)
    exe = Path(sys.executable).parent / "gotstate-persist"
    argv = [str(exe), "quota", "set", sqlite_url, "--namespace", "orders", "--max-bytes", "lots"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "invalid size 'lots'" in result.stderr
    ok = subprocess.run([*argv[:-1], "1MB"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "namespace 'orders': max_bytes=1000000\n"


# Nothing is created where no store is.


def with_url(argv: list[str], url: str) -> list[str]:
    """Put the URL after the command words (``usage`` or ``quota show``)."""
    words = 2 if argv[0] == "quota" else 1
    return [*argv[:words], url, *argv[words:]]


@pytest.mark.parametrize(
    "argv",
    [
        ["usage"],
        ["usage", "--recount"],
        ["usage", "--recount", "--namespace", "orders"],
        ["quota", "show", "--namespace", "orders"],
        ["quota", "set", "--namespace", "orders", "--max-keys", "5"],
        ["quota", "clear", "--namespace", "orders"],
    ],
)
def test_commands_never_create_tables_or_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(with_url(argv, f"sqlite:///{empty}")) == 1
    err = capsys.readouterr().err
    assert err.startswith("gotstate-persist: NotFound:")
    assert "holds no gotstate-persist store" in err
    assert empty.stat().st_size == 0
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    conn.close()

    missing = tmp_path / "missing.db"
    assert main(with_url(argv, f"sqlite:///{missing}")) == 2
    assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists()


def test_commands_never_create_a_local_store_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-store"
    url = f"file://{missing}"
    for argv in (
        ["usage", url, "--recount"],
        ["quota", "set", url, "--namespace", "orders", "--max-keys", "5"],
        ["ls", url],
    ):
        assert main(argv) == 2
        assert "no store directory at" in capsys.readouterr().err
    assert not missing.exists()
    missing.mkdir()  # an empty directory is an empty store
    assert main(["usage", url]) == 0
    assert capsys.readouterr().out == "(no namespaces)\n"


# PostgreSQL


def test_postgresql_usage_and_quota_without_leaking_the_password(
    pg_url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    password = sa.make_url(pg_url).password
    assert password
    engine = sa.create_engine(pg_url)
    try:
        # an empty database: refused, and nothing is created in it
        assert main(["usage", pg_url]) == 1
        err = capsys.readouterr().err
        assert "NotFound" in err and "holds no gotstate-persist store" in err
        assert password not in err
        assert sa.inspect(engine).get_table_names() == []

        refs = fill(pg_url, keyring, "orders", keys=2)
        total = sum(ref.size for ref in refs)
        limit = ["--namespace", "orders", "--max-bytes", str(total + 10)]
        assert main(["quota", "set", pg_url, *limit]) == 0
        captured = capsys.readouterr()
        assert captured.out == f"namespace 'orders': max_bytes={total + 10}\n"
        assert password not in captured.out + captured.err
        assert main(["usage", pg_url, "--recount"]) == 0
        captured = capsys.readouterr()
        assert password not in captured.out + captured.err
        row = usage_rows(captured.out)["orders"]
        assert row == [str(total), f"{total} B", "3", "2", "none", f"max_bytes={total + 10}"]
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE gotstate_persist_namespaces SET records = records + 5"))
        assert main(["usage", pg_url, "--recount"]) == 0
        out = capsys.readouterr().out
        assert usage_rows(out)["orders"][4] == "records -5"

        with gp.open_store(pg_url, namespace="orders", keyring=keyring, formats=FORMATS) as store:
            with pytest.raises(gp.QuotaExceeded) as refused:
                store.save("o-9", Order("o-9", 9))
            assert refused.value.limit == "max_bytes"
            assert refused.value.usage == total

        wrong = sa.make_url(pg_url).set(password="not-the-pw-1234")
        wrong_url = wrong.render_as_string(hide_password=False)
        assert main(["quota", "show", wrong_url, "--namespace", "orders"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("gotstate-persist: BackendError:")
        assert "not-the-pw-1234" not in err
    finally:
        engine.dispose()
