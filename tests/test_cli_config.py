"""``gotstate-persist config ...`` on real SQLite files, in-process and as real subprocesses.

Every command runs against configurations written by the library (or by the
command itself) and is checked by what the store then holds: versions,
values, reasons, and that a refused command wrote nothing. A canary secret
must never reach stdout, stderr or a log record, except through ``get
--reveal``.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import gotstate_persist as gp
from gotstate_persist.cli import main
from gotstate_persist.cli._configview import toml_text
from gotstate_persist.config._diff import diff
from gotstate_persist.config._secret import decode_untyped, encode_config

ROOT = Path(__file__).resolve().parent.parent
CANARY = "canary-cfgcli-5d1e77"
SITE_DEFAULTS = f"{ROOT}/examples/extensions/src/gotstate_persist_examples/defaults.py:SiteDefaults"
FAST = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)
MODULE = "cfgcli_schemas"
SCHEMAS = """
import msgspec
import gotstate_persist as gp


class Db(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "localhost"
    port: int = 5432


class Payments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    timeout_s: float = 2.0
    api_token: gp.Secret = gp.Secret("")
    db: Db = Db()


class Leaky(msgspec.Struct, frozen=True):
    endpoint: str
    password: str = ""


NOT_A_SCHEMA = 42
"""

Setup = tuple[str, Path, gp.KeyRing]


@pytest.fixture
def schemas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The application's schema module, importable as ``cfgcli_schemas``."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(SCHEMAS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


@pytest.fixture
def setup(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path, schemas: ModuleType) -> Setup:
    """An existing (empty) SQLite store and the exported keyring file."""
    gp.open_store(sqlite_url, namespace="orders", keyring=keyring).close()
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export())
    return sqlite_url, keys, keyring


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["config", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _cfg(setup: Setup, command: str, *rest: str) -> list[str]:
    url, keys, _ = setup
    return [command, url, *rest, "--keys", str(keys), "--namespace", "orders"]


def _schema(name: str = "Payments") -> list[str]:
    return ["--schema", f"{MODULE}:{name}"]


def _open(setup: Setup, schemas: ModuleType) -> gp.Store:
    url, _, keyring = setup
    store = gp.open_store(url, namespace="orders", keyring=keyring)
    store.config.define("payments", schemas.Payments)
    return store


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def _write_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _first_two_versions(setup: Setup, tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    """Version 1 from a TOML file, version 2 from JSON on stdin, both by the command."""
    toml_file = _write_file(
        tmp_path,
        "payments.toml",
        f'endpoint = "https://pay"\napi_token = "{CANARY}-1"\n\n[db]\nport = 6000\n',
    )
    code, out, err = _run(
        capsys,
        *_cfg(setup, "set", "payments", toml_file),
        *_schema(),
        "--expected-version",
        "0",
        "--reason",
        "initial",
    )
    assert (code, err) == (0, "")
    assert out == "stored payments version 1 in namespace 'orders'\n"
    body = {"endpoint": "https://pay2", "timeout_s": 3, "api_token": f"{CANARY}-2"}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(body)))
    code, out, err = _run(
        capsys,
        *_cfg(setup, "set", "payments", "-"),
        *_schema(),
        "--format",
        "json",
        "--expected-version",
        "1",
        "--reason",
        "faster",
    )
    assert (code, err) == (0, "")
    assert "version 2" in out


def test_set_then_read_every_way(
    setup: Setup,
    schemas: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _first_two_versions(setup, tmp_path, capsys, monkeypatch)
    with _open(setup, schemas) as store:
        first = store.config.get("payments", version=1)
        second = store.config.get("payments")
        assert [ref.reason for ref in store.config.history("payments")] == ["initial", "faster"]
    assert first.db.port == 6000 and first.api_token.reveal() == f"{CANARY}-1"
    assert second.timeout_s == 3.0 and second.api_token.reveal() == f"{CANARY}-2"

    code, out, _ = _run(capsys, *_cfg(setup, "ls"))
    assert code == 0
    assert _rows(out)[0] == ["NAMESPACE", "NAME", "VERSION", "CHANGED", "(UTC)", "REASON"]
    row = _rows(out)[1]
    assert row[:3] == ["orders", "payments", "2"] and row[-1] == "faster"
    code, out, _ = _run(capsys, *_cfg(setup, "ls"), "--json")
    document = json.loads(out)
    assert (document["shape_version"], document["command"]) == (1, "config ls")
    [listed] = document["configurations"]
    assert (listed["name"], listed["version"], listed["reason"]) == ("payments", 2, "faster")

    code, out, _ = _run(capsys, *_cfg(setup, "get", "payments"))
    assert code == 0
    assert json.loads(out) == {
        "endpoint": "https://pay2",
        "timeout_s": 3.0,
        "api_token": "**********",
        "db": {"host": "localhost", "port": 5432},
    }
    code, out, _ = _run(capsys, *_cfg(setup, "get", "payments", "--version", "1", "--toml"))
    assert code == 0
    assert tomllib.loads(out) == {
        "endpoint": "https://pay",
        "timeout_s": 2.0,
        "api_token": "**********",
        "db": {"host": "localhost", "port": 6000},
    }
    code, out, _ = _run(capsys, *_cfg(setup, "get", "payments", "--reveal"))
    assert json.loads(out)["api_token"] == f"{CANARY}-2"

    code, out, _ = _run(capsys, *_cfg(setup, "history", "payments"))
    assert [(row[0], row[-1]) for row in _rows(out)[1:]] == [("1", "initial"), ("2", "faster")]
    code, out, _ = _run(capsys, *_cfg(setup, "history", "payments", "--json"))
    assert [entry["version"] for entry in json.loads(out)["versions"]] == [1, 2]

    code, out, _ = _run(capsys, *_cfg(setup, "diff", "payments", "1", "2", "--json"))
    assert code == 0
    assert json.loads(out)["changes"] == [
        {"path": "$.api_token", "old": {"$secret": "**********"}, "new": {"$secret": "**********"}},
        {"path": "$.db.port", "old": 6000, "new": 5432},
        {"path": "$.endpoint", "old": "https://pay", "new": "https://pay2"},
        {"path": "$.timeout_s", "old": 2.0, "new": 3.0},
    ]
    code, out, _ = _run(capsys, *_cfg(setup, "diff", "payments", "1", "2"))
    assert [row[0] for row in _rows(out)] == [
        "PATH",
        "$.api_token",
        "$.db.port",
        "$.endpoint",
        "$.timeout_s",
    ]
    code, out, _ = _run(capsys, *_cfg(setup, "diff", "payments", "2", "2"))
    assert out == "(no changes from version 2 to 2)\n"


def test_refused_set_prints_every_problem_and_writes_nothing(
    setup: Setup,
    schemas: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _first_two_versions(setup, tmp_path, capsys, monkeypatch)
    bad = _write_file(
        tmp_path, "bad.json", json.dumps({"endpoint": 5, "timeout_s": CANARY, "extra": CANARY})
    )
    code, out, err = _run(
        capsys, *_cfg(setup, "set", "payments", bad), *_schema(), "--expected-version", "2"
    )
    assert code == 1 and out == ""
    assert err.startswith("gotstate-persist: ConfigInvalid: 3 problem(s); nothing was written\n")
    assert "  $.endpoint: " in err and "  $.timeout_s: " in err and "extra" in err
    assert CANARY not in err

    good = _write_file(tmp_path, "good.json", json.dumps({"endpoint": "https://x"}))
    code, _, err = _run(
        capsys, *_cfg(setup, "set", "payments", good), *_schema(), "--expected-version", "1"
    )
    assert code == 1 and "VersionConflict" in err and "--expected-version 2" in err
    assert main(["config", *_cfg(setup, "set", "payments", good), *_schema()]) == 2  # required
    code, _, err = _run(
        capsys,
        *_cfg(setup, "set", "payments", good),
        *_schema("Leaky"),
        "--expected-version",
        "2",
    )
    assert code == 2 and "password" in err  # the security policy refuses the schema
    code, _, err = _run(
        capsys, *_cfg(setup, "set", "payments", _write_file(tmp_path, "x.toml", "a = [")),
        *_schema(), "--expected-version", "2",
    )  # fmt: skip
    assert code == 1 and "x.toml: not valid TOML" in err
    with _open(setup, schemas) as store:
        assert [ref.version for ref in store.config.history("payments")] == [1, 2]
        assert store.config.get("payments").endpoint == "https://pay2"


@pytest.mark.parametrize(
    ("schema", "code", "message"),
    [
        ("json:loads", 2, "is not a msgspec.Struct subclass"),
        (f"{MODULE}:NOT_A_SCHEMA", 2, "is not a msgspec.Struct subclass"),
        (f"{MODULE}:Missing", 2, "has no 'Missing'"),
        ("no_such_module_xyz:Payments", 2, "no module named 'no_such_module_xyz'"),
        ("not a schema", 2, "use MODULE:CLASS"),
    ],
)
def test_schema_must_be_an_importable_struct(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    schema: str,
    code: int,
    message: str,
) -> None:
    good = _write_file(tmp_path, "good.json", json.dumps({"endpoint": "https://x"}))
    status, out, err = _run(
        capsys,
        *_cfg(setup, "set", "payments", good),
        "--schema",
        schema,
        "--expected-version",
        "0",
    )
    assert (status, out) == (code, "") and message in err and "Traceback" not in err
    assert message in err.splitlines()[-1]  # one line (after argparse's usage, if any)


def test_rollback_writes_the_old_value_as_a_new_version(
    setup: Setup,
    schemas: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _first_two_versions(setup, tmp_path, capsys, monkeypatch)
    code, out, err = _run(
        capsys,
        *_cfg(setup, "rollback", "payments"),
        "--to",
        "1",
        "--expected-version",
        "2",
        *_schema(),
    )
    assert (code, err) == (0, "")
    assert out == "rolled payments back to version 1: stored as version 3 in namespace 'orders'\n"
    with _open(setup, schemas) as store:
        assert store.config.get("payments") == store.config.get("payments", version=1)
        assert store.config.history("payments")[-1].reason == "rollback to version 1"
    code, _, err = _run(
        capsys, *_cfg(setup, "rollback", "payments"), "--to", "2", "--expected-version", "2",
        *_schema(),
    )  # fmt: skip
    assert code == 1 and "--expected-version 3" in err


def test_explain_names_every_source(
    setup: Setup,
    schemas: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _first_two_versions(setup, tmp_path, capsys, monkeypatch)
    monkeypatch.setenv("PAY_TIMEOUT_S", "9")
    monkeypatch.setenv("PAY_API_TOKEN", f"{CANARY}-env")
    code, out, err = _run(
        capsys,
        *_cfg(setup, "explain", "payments"),
        *_schema(),
        "--source",
        f"file:{tmp_path / 'payments.toml'}",
        "--source",
        "store:1",
        "--source",
        "env:PAY_",
        "--json",
    )
    assert (code, err) == (0, "")
    fields = {field["path"]: field for field in json.loads(out)["fields"]}
    toml_file = str(tmp_path / "payments.toml")
    assert fields["$.timeout_s"] == {
        "path": "$.timeout_s",
        "value": 9.0,
        "source": "environment PAY_TIMEOUT_S",
        "overridden": ["default", "store version 1"],
    }
    assert fields["$.api_token"]["value"] == {"$secret": "**********"}
    assert fields["$.api_token"]["overridden"] == ["default", f"{toml_file}:2", "store version 1"]
    assert fields["$.db.port"]["source"] == "store version 1"
    assert CANARY not in out

    code, out, _ = _run(capsys, *_cfg(setup, "explain", "payments"), *_schema())  # store
    assert _rows(out)[0] == ["PATH", "VALUE", "SOURCE", "OVERRIDDEN"]
    assert ["$.endpoint", '"https://pay2"', "store", "version", "2", "-"] in _rows(out)

    monkeypatch.setenv("PAY_TIMEOUT_S", "-")  # not a number: refused, each problem listed
    code, out, err = _run(
        capsys, *_cfg(setup, "explain", "payments"), *_schema(), "--source", "env:PAY_"
    )
    assert code == 1 and out == "" and "ConfigInvalid" in err and "$.timeout_s" in err
    code, _, err = _run(
        capsys, *_cfg(setup, "explain", "payments"), *_schema(), "--source", "nowhere:x"
    )
    assert code == 2 and "file:PATH, env:PREFIX" in err


def test_explain_with_an_active_configuration_extension(
    setup: Setup, schemas: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with _open(setup, schemas) as store:
        store.extensions.register(SITE_DEFAULTS, limits=FAST)
    argv = [*_cfg(setup, "explain", "payments"), *_schema(), "--source", "extension:site-defaults"]
    code, _, err = _run(capsys, *argv)
    assert code == 1 and "ExtensionUnavailable" in err and "ext activate" in err
    with _open(setup, schemas) as store:
        store.extensions.activate("site-defaults")
        store.extensions.deactivate("site-defaults")
        store.extensions.activate("site-defaults")  # persisted 'active'; closing stops it here
        revision = store.extensions.get("site-defaults").revision
    code, out, err = _run(capsys, *argv, "--json")
    assert (code, err) == (0, "")
    fields = {field["path"]: field for field in json.loads(out)["fields"]}
    assert fields["$.endpoint"]["value"] == "https://pay.example.com"
    assert fields["$.endpoint"]["source"] == "extension site-defaults"
    with _open(setup, schemas) as store:  # explaining wrote nothing
        assert store.extensions.get("site-defaults").revision == revision


def test_canary_never_shown_unless_revealed(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _first_two_versions(setup, tmp_path, capsys, monkeypatch)
    monkeypatch.setenv("PAY_API_TOKEN", f"{CANARY}-env")
    bad = _write_file(
        tmp_path,
        "bad.toml",
        f'endpoint = "{CANARY}"\ntimeout_s = "{CANARY}"\napi_token = 7\nunknown = "{CANARY}"\n',
    )
    runs = [
        _cfg(setup, "ls"),
        _cfg(setup, "ls", "--json"),
        _cfg(setup, "get", "payments"),
        _cfg(setup, "get", "payments", "--toml", "--version", "1"),
        _cfg(setup, "history", "payments"),
        _cfg(setup, "diff", "payments", "1", "2"),
        _cfg(setup, "diff", "payments", "1", "2", "--json"),
        [*_cfg(setup, "explain", "payments"), *_schema(), "--source", "env:PAY_"],
        [*_cfg(setup, "explain", "payments"), *_schema(), "--source", f"file:{bad}"],
        [*_cfg(setup, "set", "payments", bad), *_schema(), "--expected-version", "2"],
        [*_cfg(setup, "rollback", "payments"), *_schema(), "--to", "1", "--expected-version", "1"],
        [*_cfg(setup, "watch", "payments"), "--since", "0", "--timeout", "0"],
    ]
    for argv in runs:
        code, out, err = _run(capsys, *argv)
        assert CANARY not in out + err, argv
        assert "Traceback" not in err
    assert CANARY not in caplog.text
    code, out, _ = _run(capsys, *_cfg(setup, "get", "payments", "--reveal"))
    assert code == 0 and f"{CANARY}-2" in out


def test_usage_errors_and_missing_things(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, keys, _ = setup
    code, out, _ = _run(capsys, *_cfg(setup, "ls"))
    assert (code, out) == (0, "(no configurations)\n")
    code, _, err = _run(capsys, *_cfg(setup, "get", "payments"))
    assert code == 1 and "NotFound" in err and "no stored version" in err
    code, _, err = _run(capsys, *_cfg(setup, "history", "payments"))
    assert code == 1 and "config ls" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    code, _, err = _run(
        capsys, *_cfg(setup, "set", "payments"), *_schema(), "--expected-version", "0"
    )
    assert code == 2 and "--format" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1, 2]"))
    code, _, err = _run(
        capsys, *_cfg(setup, "set", "payments", "-"), *_schema(), "--format", "json",
        "--expected-version", "0",
    )  # fmt: skip
    assert code == 1 and "<stdin>: the top level must be a table" in err
    code, _, err = _run(capsys, *_cfg(setup, "get", ""))
    assert code == 2 and "name" in err
    code, _, err = _run(capsys, *_cfg(setup, "get", "payments", "--json", "--toml"))
    assert code == 2
    monkeypatch.delenv("GOTSTATE_PERSIST_KEYS", raising=False)
    code, _, err = _run(capsys, "get", url, "payments")
    assert code == 2 and "--keys FILE" in err
    missing = tmp_path / "none.db"
    code, _, err = _run(capsys, "ls", f"sqlite:///{missing}", "--keys", str(keys))
    assert code == 2 and "no SQLite database" in err and not missing.exists()


def test_hostile_reason_is_escaped(
    setup: Setup, schemas: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with _open(setup, schemas) as store:
        store.config.put(
            "payments", {"endpoint": "https://\x1b[31mred"}, expected_version=0, reason="a\x1b]0;x"
        )
    for argv in (
        _cfg(setup, "history", "payments"),
        _cfg(setup, "ls"),
        _cfg(setup, "get", "payments"),
    ):
        code, out, _ = _run(capsys, *argv)
        assert code == 0 and "\x1b" not in out
    code, out, _ = _run(capsys, *_cfg(setup, "get", "payments"))
    assert json.loads(out)["endpoint"] == "https://\x1b[31mred"  # escaped, still valid JSON


def test_toml_output_round_trips_and_refuses_null() -> None:
    value = {
        "a": 'tab\tquote"back\\slash\x7fdel\u202e',
        "n": [1, 2.5, True, float("inf")],
        "items": [{"x": 1}, {"y": "z"}],
        "weird key": {"inner": {"deep": 1}, "empty": {}},
    }
    text = toml_text(value)
    assert "\x7f" not in text and "\u202e" not in text
    assert tomllib.loads(text) == value
    with pytest.raises(gp.InvalidArgument, match=r"null at \$\.a\.b"):
        toml_text({"a": {"b": None}})


def test_diff_accepts_schema_less_builtins(schemas: ModuleType) -> None:
    old = schemas.Payments("https://a", api_token=gp.Secret(CANARY))
    new = schemas.Payments("https://b", api_token=gp.Secret(CANARY + "x"), db=schemas.Db(port=1))
    untyped_old, untyped_new = (decode_untyped(encode_config(v)) for v in (old, new))
    assert isinstance(untyped_old["api_token"], gp.Secret)
    assert diff(untyped_old, untyped_new) == diff(old, new)
    assert [c.path for c in diff(untyped_old, untyped_new)] == [
        "$.api_token",
        "$.db.port",
        "$.endpoint",
    ]
    assert CANARY not in repr(diff(untyped_old, untyped_new))
    assert diff(None, untyped_new)[0] == gp.ConfigChange("$.api_token", None, "**********")


def test_console_script_watch_prints_each_version_and_stops_on_ctrl_c(
    setup: Setup, schemas: ModuleType
) -> None:
    url, keys, _ = setup
    with _open(setup, schemas) as store:
        store.config.put("payments", {"endpoint": "https://a"}, expected_version=0, reason="one")
    exe = Path(sys.executable).parent / "gotstate-persist"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [str(exe), "config", "watch", url, "payments", "--keys", str(keys)]
    argv += ["--namespace", "orders", "--since", "0"]
    started = time.monotonic()
    with subprocess.Popen(
        [*argv, "--timeout", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    ) as watcher:  # fmt: skip
        assert watcher.stdout is not None
        first = watcher.stdout.readline()  # flushed at once, before the watch ends
        with _open(setup, schemas) as store:
            store.config.put(
                "payments", {"endpoint": "https://b"}, expected_version=1, reason="two"
            )
        second = watcher.stdout.readline()
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert first.split()[0] == "1" and first.split()[-1] == "one"
    assert second.split()[0] == "2" and second.split()[-1] == "two"
    assert out == "" and err == ""
    assert time.monotonic() - started < 60

    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as watcher:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith("1 ")  # running, waiting for more
        assert watcher.stdout.readline().startswith("2 ")
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_console_script_runs_get(setup: Setup, schemas: ModuleType) -> None:
    url, keys, _ = setup
    with _open(setup, schemas) as store:
        store.config.put(
            "payments", {"endpoint": "https://a", "api_token": CANARY}, expected_version=0
        )
    exe = Path(sys.executable).parent / "gotstate-persist"
    result = subprocess.run(
        [str(exe), "config", "get", url, "payments", "--keys", str(keys), "--namespace", "orders"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["api_token"] == "**********"
    assert CANARY not in result.stdout + result.stderr


def test_ls_every_namespace_and_watch_only_new_versions_by_default(
    setup: Setup, schemas: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys, keyring = setup
    for namespace in ("billing", "orders"):
        with gp.open_store(url, namespace=namespace, keyring=keyring) as store:
            store.config.define("payments", schemas.Payments)
            store.config.put("payments", {"endpoint": "https://a"}, expected_version=0)
            store.config.put("payments", {"endpoint": "https://b"}, expected_version=1)
    code, out, _ = _run(capsys, "ls", url, "--keys", str(keys))
    assert code == 0 and [row[:3] for row in _rows(out)[1:]] == [
        ["billing", "payments", "2"],
        ["orders", "payments", "2"],
    ]
    code, out, _ = _run(capsys, *_cfg(setup, "watch", "payments"), "--timeout", "0")
    assert (code, out) == (0, "")  # nothing new landed
    code, out, _ = _run(capsys, *_cfg(setup, "watch", "payments"), "--since", "0", "--timeout", "0")
    assert code == 0 and [row[0] for row in _rows(out)] == ["1", "2"]
