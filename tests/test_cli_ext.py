"""``gotstate-persist ext ...`` on real SQLite files, in-process and as real subprocesses.

Every command is run against registrations written by the library (or by
the command itself) and checked by what the registry then holds: the
persisted status, revision, limits and stats, and that a refused command
wrote nothing. ``ls``, ``show``, ``history`` and ``verify`` are proven to
import no extension code in a fresh interpreter.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gotstate_persist as gp
from gotstate_persist._names import system_key
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.cli import main
from gotstate_persist.extensions._doctor import diagnose

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).parent / "ext_samples"
THROTTLE = f"{SAMPLES / 'throttle.py'}:Throttle"
AUDIT = f"{SAMPLES / 'audit.py'}:Audit"
FAST = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)
FAST_OPTIONS = ["--timeout-s", "5", "--start-timeout-s", "20", "--memory-bytes", "none"]

Setup = tuple[str, Path, gp.KeyRing]


@pytest.fixture
def setup(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path) -> Setup:
    """An existing (empty) SQLite store and the exported keyring file."""
    gp.open_store(sqlite_url, namespace="orders", keyring=keyring).close()
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export())
    return sqlite_url, keys, keyring


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ext", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ext(setup: Setup, *argv: str, namespace: str = "orders") -> list[str]:
    url, keys, _ = setup
    command, *rest = argv
    return [command, url, *rest, "--keys", str(keys), "--namespace", namespace]


def _registry(setup: Setup, namespace: str = "orders") -> gp.Store:
    url, _, keyring = setup
    return gp.open_store(url, namespace=namespace, keyring=keyring)


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def _fields(out: str) -> dict[str, str]:
    """``ext show``'s plain output: field -> value."""
    fields = {}
    for line in out.splitlines()[1:]:
        field, _, value = line.partition(" ")
        fields[field] = value.strip()
    return fields


def test_register_then_ls_show_history(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    limits = ["--max-input-bytes", "1MiB", "--rate-per-s", "50", "--burst", "5", "--cpu-s", "2"]
    code, out, err = _run(capsys, *_ext(setup, "register", THROTTLE, *FAST_OPTIONS, *limits))
    assert code == 0, err
    assert out.startswith(
        "registered throttle 1.0.0 (event_processing, worker) as revision 1 in namespace "
        "'orders'; 1 file pinned, code sha256 "
    )
    with _registry(setup) as store:
        reg = store.extensions.get("throttle")
    assert reg.limits == gp.ResourceLimits(
        timeout_s=5.0,
        start_timeout_s=20.0,
        memory_bytes=None,
        max_input_bytes=1 << 20,
        rate_per_s=50.0,
        burst=5,
        cpu_s=2.0,
    )
    assert reg.code_sha256 in out and "1 file pinned" in out

    url, keys, _ = setup
    code, out, _ = _run(capsys, "ls", url, "--keys", str(keys))  # every namespace
    rows = _rows(out)
    assert rows[0][:7] == [
        "NAMESPACE",
        "NAME",
        "VERSION",
        "CATEGORY",
        "ISOLATION",
        "STATUS",
        "REVISION",
    ]
    assert rows[1][:7] == [
        "orders",
        "throttle",
        "1.0.0",
        "event_processing",
        "worker",
        "registered",
        "1",
    ]
    assert rows[1][-1] == "registered" and code == 0

    code, out, _ = _run(capsys, *_ext(setup, "show", "throttle"))
    fields = _fields(out)
    assert code == 0
    assert fields["code_sha256"] == reg.code_sha256
    assert fields["files"].startswith("1 file pinned under ")
    assert fields["limits.max_input_bytes"] == "1048576 (1.0 MiB)"
    assert fields["limits.memory_bytes"] == "none"
    assert fields["limits.rate_per_s"] == "50.0" and fields["limits.burst"] == "5"
    assert fields["interface"] == "process" and fields["target"] == THROTTLE
    assert fields["stats"].startswith("none persisted yet")

    code, out, _ = _run(capsys, *_ext(setup, "show", "throttle", "--files"))
    assert ["throttle.py", reg.files["throttle.py"]] in _rows(out)

    code, out, _ = _run(capsys, *_ext(setup, "history", "throttle"))
    assert _rows(out)[0] == ["REVISION", "CHANGED", "(UTC)", "STATUS", "VERSION", "REASON"]
    assert [row[0] for row in _rows(out)[1:]] == ["1"] and code == 0


def test_register_refusals_write_nothing(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = f"{SAMPLES / 'invalid_many.py'}:Broken"
    code, out, err = _run(capsys, *_ext(setup, "register", broken))
    assert code == 2 and out == ""
    assert "MAJOR.MINOR.PATCH" in err and "process() must take 1 argument" in err
    for bad, said in (
        (["--memory", "12XB"], "invalid size"),  # an unambiguous prefix of --memory-bytes
        (["--max-input-bytes", "none"], "always has a limit"),
        (["--timeout-s", "-1"], "positive number of seconds"),
        (["--max-events", "many"], "whole number"),
        (["--isolation", "docker"], "invalid choice"),
        (["--expected-version", "-1"], "invalid revision"),
        (["--burst", "3"], "burst needs rate_per_s"),
        (["--max-concurrency", "0"], "max_concurrency must be a positive int"),
    ):
        code, _, err = _run(capsys, *_ext(setup, "register", THROTTLE, *bad))
        assert code == 2, bad
        assert said in err, (bad, err)
        assert "Traceback" not in err
    with _registry(setup) as store:
        assert store.usage().records == 0

    source = tmp_path / "throttle.py"
    shutil.copy(SAMPLES / "throttle.py", source)
    target = f"{source}:Throttle"
    assert _run(capsys, *_ext(setup, "register", target, *FAST_OPTIONS))[0] == 0
    code, _, err = _run(capsys, *_ext(setup, "register", target, *FAST_OPTIONS))
    assert code == 1
    assert "VersionConflict" in err and "(on the command line: --expected-version 1)" in err
    source.write_text(source.read_text().replace('"1.0.0"', '"2.0.0"'))
    code, _, err = _run(
        capsys, *_ext(setup, "register", target, "--expected-version", "1", *FAST_OPTIONS)
    )
    assert code == 2 and "(on the command line: --allow-major)" in err
    with _registry(setup) as store:
        assert len(store.extensions.history("throttle")) == 1
    code, out, err = _run(
        capsys,
        *_ext(setup, "register", target, "--expected-version", "1", "--allow-major", *FAST_OPTIONS),
    )
    assert code == 0, err
    assert (
        "throttle 2.0.0" in out
        and "as revision 2 in namespace 'orders' (upgraded from 1.0.0" in out
    )


def test_lifecycle_commands(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    with _registry(setup) as store:
        store.extensions.register(THROTTLE, limits=FAST)
        store.extensions.register(f"{SAMPLES / 'guarded.py'}:Guarded", isolation="in-process")

    code, out, err = _run(capsys, *_ext(setup, "activate", "throttle"))
    assert code == 0, err
    assert out.startswith("activated throttle (revision 2): its worker started")
    assert "exits, which stops it; the persisted status stays 'active'" in out
    code, out, _ = _run(capsys, *_ext(setup, "activate", "throttle"))
    assert code == 0 and "already 'active': nothing was written" in out
    code, out, _ = _run(capsys, *_ext(setup, "activate", "guarded"))
    assert code == 0 and "its guarded runner started" in out
    code, _, err = _run(capsys, *_ext(setup, "activate", "throttle", "--expected-version", "1"))
    assert code == 1 and "revision 2, not 1" in err

    code, out, _ = _run(capsys, *_ext(setup, "deactivate", "throttle", "--timeout", "2"))
    assert code == 0 and out == "throttle is now inactive (revision 3): deactivated\n"
    code, out, _ = _run(capsys, *_ext(setup, "deactivate", "throttle"))
    assert out == "throttle was already inactive (revision 3); nothing was written\n"
    code, _, err = _run(capsys, *_ext(setup, "deactivate", "throttle", "--timeout", "soon"))
    assert code == 2 and "invalid number of seconds" in err

    code, _, err = _run(capsys, *_ext(setup, "unregister", "throttle", "--expected-version", "2"))
    assert code == 1 and "VersionConflict" in err
    code, out, _ = _run(capsys, *_ext(setup, "unregister", "throttle", "--expected-version", "3"))
    assert code == 0 and out.startswith("throttle is now unregistered (revision 4)")
    with _registry(setup) as store:
        statuses = [reg.status for reg in store.extensions.history("throttle")]
    assert statuses == ["registered", "active", "inactive", "unregistered"]

    url, keys, _ = setup
    _, out, _ = _run(capsys, "ls", url, "--keys", str(keys))
    assert [row[1] for row in _rows(out)[1:]] == ["guarded"]
    _, out, _ = _run(capsys, "ls", url, "--keys", str(keys), "--all")
    assert [row[1] for row in _rows(out)[1:]] == ["guarded", "throttle"]
    code, _, err = _run(capsys, *_ext(setup, "activate", "throttle"))
    assert code == 1 and "ExtensionUnavailable" in err and "register it again" in err
    code, out, _ = _run(capsys, *_ext(setup, "history", "throttle"))
    assert [row[3] for row in _rows(out)[1:]] == statuses


def test_show_prints_the_stats_persisted_on_deactivation(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    with _registry(setup) as store:
        exts = store.extensions
        limited = gp.ResourceLimits(
            timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None, rate_per_s=0.01, burst=1
        )
        exts.register(THROTTLE, limits=limited)
        handle = exts.activate("throttle")
        assert handle.call("process", gp.EventView("next"))[0].metadata["checked"] is True
        with pytest.raises(gp.RateLimited):
            handle.call("process", gp.EventView("next"))
        persisted = exts.deactivate("throttle", timeout=5).stats
    assert persisted is not None and persisted.p50_ms is not None

    code, out, _ = _run(capsys, *_ext(setup, "show", "throttle"))
    fields = _fields(out)
    assert code == 0
    assert fields["status"] == "inactive" and fields["revision"] == "3"
    assert fields["stats.calls"] == "1" and fields["stats.ok"] == "1"
    assert fields["stats.failures"] == "0"
    assert fields["stats.p50_ms"] == f"{persisted.p50_ms:.3f} ms"
    assert fields["stats.p99_ms"] == f"{persisted.p99_ms:.3f} ms"
    assert "rate=1" in fields["stats.rejected"] and "size=0" in fields["stats.rejected"]

    code, out, _ = _run(capsys, *_ext(setup, "show", "throttle", "--json"))
    document = json.loads(out)
    assert (document["shape_version"], document["command"]) == (1, "ext show")
    shown = document["registration"]
    assert shown["namespace"] == "orders" and shown["revision"] == 3
    assert shown["stats"]["rejected"]["rate"] == 1 and shown["limits"]["rate_per_s"] == 0.01

    code, out, _ = _run(capsys, *_ext(setup, "show", "throttle", "--revision", "1"))
    assert _fields(out)["status"] == "registered" and code == 0
    code, _, err = _run(capsys, *_ext(setup, "show", "throttle", "--revision", "9"))
    assert code == 1 and "NotFound" in err and "no revision 9" in err


def _package(tmp_path: Path) -> Path:
    """A package-directory extension: the throttle sample plus a helper module."""
    package = tmp_path / "throttlepkg"
    package.mkdir()
    shutil.copy(SAMPLES / "throttle.py", package / "__init__.py")
    (package / "helper.py").write_text("VALUE = 1\n")
    return package


def test_verify_names_every_changed_added_and_removed_file(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = _package(tmp_path)
    with _registry(setup) as store:
        store.extensions.register(f"{package}:Throttle", limits=FAST)
        store.extensions.register(AUDIT, limits=FAST)
    url, keys, _ = setup
    code, out, _ = _run(capsys, "verify", url, "--keys", str(keys))
    assert code == 0
    assert "ok       orders/throttle (2 files)" in out and "ok       orders/audit (1 file)" in out
    assert out.endswith("2 of 2 extensions match their pinned code, 0 changed\n")

    init = package / "__init__.py"
    init.write_text(init.read_text() + "\n# edited after registration\n")
    (package / "helper.py").unlink()
    (package / "added.py").write_text("X = 2\n")
    code, out, _ = _run(capsys, "verify", url, "--keys", str(keys))
    assert code == 1
    lines = out.splitlines()
    assert f"CHANGED  orders/throttle (files under {package.parent})" in lines
    assert "         changed  throttlepkg/__init__.py" in lines
    assert "         added    throttlepkg/added.py" in lines
    assert "         removed  throttlepkg/helper.py" in lines
    assert "ok       orders/audit (1 file)" in lines
    assert lines[-1] == "1 of 2 extensions match their pinned code, 1 changed"

    code, _, err = _run(capsys, *_ext(setup, "activate", "throttle"))
    assert code == 1 and "ExtensionCodeChanged" in err and "--expected-version N" in err
    with _registry(setup) as store:
        reg = store.extensions.get("throttle")
    assert reg.status == "failed" and "code changed" in reg.reason


def test_hostile_target_and_reason_are_escaped(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "evil\x1b]0;owned\x07\u202edir"
    directory.mkdir()
    shutil.copy(SAMPLES / "throttle.py", directory / "throttle.py")
    keyring = setup[2]
    with _registry(setup) as store:
        reg = store.extensions.register(f"{directory / 'throttle.py'}:Throttle", limits=FAST)
        # a reason as another process (or tool) may have stored it
        pipeline = RecordPipeline(store.backend, keyring=keyring, namespace="orders")
        hostile = "crashed \x1b[2J\x1b[H [bold red]not markup[/] \u202eesrever"
        pipeline.append(
            system_key("ext", "throttle"),
            reg.record(status="failed", reason=hostile),
            expected_version=reg.revision,
        )
    outputs = [
        _run(capsys, *_ext(setup, "ls"))[1],
        _run(capsys, *_ext(setup, "show", "throttle"))[1],
        _run(capsys, *_ext(setup, "show", "throttle", "--json"))[1],
        _run(capsys, *_ext(setup, "history", "throttle"))[1],
    ]
    for out in outputs:
        assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out
        assert "\\x1b[2J" in out or "\\u001b[2J" in out
    show = outputs[1]
    assert "evil\\x1b]0;owned\\x07\\u202edir" in show  # the target, the location, the root
    assert "[bold red]not markup[/]" in show

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["ext", *_ext(setup, "show", "throttle")]) == 0
    drawn = terminal.getvalue()
    assert "─" in drawn or "━" in drawn  # rich drew a table
    assert "\x1b[2J" not in drawn and "\x1b]0;" not in drawn and "\u202e" not in drawn
    assert "[bold red]not markup[/]" in drawn and "\\x1b[2J" in drawn


CANARY_MODULE = """
from pathlib import Path

Path({canary!r}).write_text("imported")

from gotstate_persist import EventView


class Canary:
    name = "canary"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> EventView:
        return event
"""


def test_reading_commands_import_no_extension_code(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    canary = tmp_path / "canary"
    (modules / "canary_ext_mod.py").write_text(CANARY_MODULE.format(canary=str(canary)))
    monkeypatch.syspath_prepend(str(modules))
    with _registry(setup) as store:
        reg = store.extensions.register("canary_ext_mod:Canary", limits=FAST)
    assert reg.location.kind == "module"
    assert canary.exists()  # the throwaway worker imported it: the canary works
    canary.unlink()
    assert "canary_ext_mod" not in sys.modules

    url, keys, _ = setup
    commands = [
        ["ext", "ls", url, "--keys", str(keys)],
        ["ext", "show", url, "canary", "--namespace", "orders", "--keys", str(keys)],
        ["ext", "show", url, "canary", "--namespace", "orders", "--keys", str(keys), "--json"],
        ["ext", "history", url, "canary", "--namespace", "orders", "--keys", str(keys)],
        ["ext", "verify", url, "--keys", str(keys)],
    ]
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(modules)!r})  # importable, were anything to import it
        from gotstate_persist.cli import main
        codes = [main(argv) for argv in {commands!r}]
        assert "canary_ext_mod" not in sys.modules, "extension code was imported"
        print("codes", codes)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "GOTSTATE_PERSIST_KEYS"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "codes [0, 0, 0, 0, 0]" in result.stdout
    assert "canary_ext_mod:Canary" in result.stdout  # show printed the target
    assert not canary.exists()


def test_errors_never_show_secrets_or_tracebacks(setup: Setup, tmp_path: Path) -> None:
    url, keys, keyring = setup
    with _registry(setup) as store:
        store.extensions.register(THROTTLE, limits=FAST)
    secret = json.loads(keyring.export())["keys"][0]["secret"]
    other = gp.KeyRing.generate()
    other_secret = json.loads(other.export())["keys"][0]["secret"]
    password = "canary-pw-7f3a91"
    env = dict(os.environ, PYTHONPATH=str(ROOT), GOTSTATE_PERSIST_KEYS=other.export())
    runs = [
        ["ext", "ls", url],  # sealed with another key
        ["ext", "show", url, "throttle", "--namespace", "orders"],
        ["ext", "verify", url],
        ["ext", "activate", url, "throttle", "--namespace", "orders"],
        ["ext", "ls", f"postgresql://app:{password}@127.0.0.1:1/db"],
        ["ext", "show", f"postgresql://app:{password}@127.0.0.1:1/db", "throttle"],
        ["ext", "register", f"sqlite:///{tmp_path / 'missing.db'}", THROTTLE],
        ["ext", "show", url, "throttle", "--namespace", "orders", "--keys", str(keys)],
    ]
    for argv in runs:
        result = subprocess.run(
            [sys.executable, "-m", "gotstate_persist.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        shown = result.stdout + result.stderr
        for forbidden in (secret, other_secret, password, "Traceback"):
            assert forbidden not in shown, (argv, forbidden)
        if argv[-1] == str(keys):
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode in (1, 2), (argv, result.stderr)
            assert result.stderr.startswith("gotstate-persist: "), argv
    assert not (tmp_path / "missing.db").exists()


def test_namespaces_and_usage_errors(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    url, keys, _ = setup
    with _registry(setup, "billing") as store:
        store.extensions.register(AUDIT, limits=FAST)
    with _registry(setup) as store:
        store.extensions.register(THROTTLE, limits=FAST)
    code, out, _ = _run(capsys, "ls", url, "--keys", str(keys))
    assert [row[:2] for row in _rows(out)[1:]] == [["billing", "audit"], ["orders", "throttle"]]
    code, out, _ = _run(capsys, "ls", url, "--keys", str(keys), "--namespace", "billing")
    assert [row[:2] for row in _rows(out)[1:]] == [["billing", "audit"]]
    code, out, err = _run(capsys, "ls", url, "--keys", str(keys), "--namespace", "empty")
    assert code == 0 and out == "(no extensions)\n" and "'billing'" in err

    code, _, err = _run(capsys, *_ext(setup, "show", "audit"))  # it is in billing
    assert code == 1 and "NotFound" in err and "no extension named 'audit'" in err
    code, _, err = _run(capsys, "show", url, "throttle", "--namespace", "", "--keys", str(keys))
    assert code == 2 and "namespace" in err
    assert main(["ext"]) == 2
    assert main(["ext", "show", url]) == 2
    capsys.readouterr()

    # a namespace sealed with another keyring fails alone; the others are still listed
    with gp.open_store(url, namespace="foreign", keyring=gp.KeyRing.generate()) as store:
        store.extensions.register(AUDIT, limits=FAST)
    code, out, err = _run(capsys, "ls", url, "--keys", str(keys))
    assert code == 1
    assert [row[0] for row in _rows(out)[1:]] == ["billing", "orders"]
    assert "namespace 'foreign': IntegrityError" in err


def test_missing_keyring_and_store(
    setup: Setup,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, _ = setup
    monkeypatch.delenv("GOTSTATE_PERSIST_KEYS", raising=False)
    code, _, err = _run(capsys, "ls", url)
    assert code == 2 and "--keys FILE" in err
    missing = tmp_path / "none.db"
    code, _, err = _run(capsys, "ls", f"sqlite:///{missing}", "--keys", str(tmp_path / "keys.json"))
    assert code == 2 and "no SQLite database" in err and not missing.exists()


def test_doctor_reports_this_hosts_layers(capsys: pytest.CaptureFixture[str]) -> None:
    report = diagnose()
    assert report.python_starts_isolated and report.rung == "contained"
    assert [p.rung for p in report.ladder if p.applies] == ["guarded", "contained"]
    assert report.uid == os.geteuid() and not report.prefix.words
    probes = {probe.resource: probe for probe in report.limits}
    assert list(probes) == [
        "RLIMIT_AS",
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
        "RLIMIT_NOFILE",
        "RLIMIT_CORE",
    ]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = probes["RLIMIT_NOFILE"]
    assert (nofile.soft, nofile.hard, nofile.default) == (soft, hard, 64)
    assert probes["RLIMIT_CORE"].effective == 0
    assert probes["RLIMIT_AS"].default == gp.ResourceLimits().memory_bytes
    assert any("/proc/<host pid>/environ" in gap for gap in report.gaps)

    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert "highest claim for a worker on this host: contained" in out
    assert "RLIMIT_AS" in out and "/proc/<host pid>/environ" in out
    assert ("-I -m" in out) != report.bootstrap


def test_doctor_reads_the_worker_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = diagnose(["no-such-sandbox-command-xyz", "--flag"])
    assert not missing.prefix.found and missing.rung == "contained"
    assert "not on PATH" in missing.prefix.note
    code, out, _ = _run(capsys, "doctor", "--worker-prefix", "no-such-sandbox-command-xyz --flag")
    assert code == 1 and "NOT FOUND" in out

    bwrap = tmp_path / "bwrap"
    bwrap.write_text('#!/bin/sh\nexec "$@"\n')
    bwrap.chmod(0o755)
    sandboxed = diagnose([str(bwrap), "--unshare-pid", "--die-with-parent"])
    assert sandboxed.prefix.found and sandboxed.prefix.command == str(bwrap)
    assert sandboxed.prefix.hides_host_processes and sandboxed.rung == "sandboxed"
    assert not any("can read /proc/<host pid>/environ" in gap for gap in sandboxed.gaps)
    plain = diagnose([str(bwrap)])
    assert plain.rung == "sandboxed" and not plain.prefix.hides_host_processes
    assert any("can read /proc/<host pid>/environ" in gap for gap in plain.gaps)
    code, out, _ = _run(capsys, "doctor", "--worker-prefix", f"{bwrap} --unshare-pid")
    assert code == 0 and "highest claim for a worker on this host: sandboxed" in out
    code, _, err = _run(capsys, "doctor", "--worker-prefix", "bwrap 'unbalanced")
    assert code == 2 and "invalid worker prefix" in err


def _fake_host(tmp_path: Path, *, delegated: bool) -> tuple[Path, Path]:
    proc, cgroups = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mounts").write_text(
        f"proc /proc proc rw 0 0\ncgroup2 {cgroups} cgroup2 rw,nosuid 0 0\n"
    )
    (proc / "self" / "cgroup").write_text("0::/user.slice/app.scope\n")
    own = cgroups / "user.slice" / "app.scope"
    own.mkdir(parents=True)
    if delegated:
        (own / "cgroup.subtree_control").write_text("")
    return proc, cgroups


def test_doctor_cgroup_probe(tmp_path: Path) -> None:
    proc, cgroups = _fake_host(tmp_path / "yes", delegated=True)
    found = diagnose(proc_root=proc, cgroup_root=cgroups).cgroup
    assert (found.v2, found.path, found.delegated) == (True, "/user.slice/app.scope", True)
    proc, cgroups = _fake_host(tmp_path / "no", delegated=False)
    found = diagnose(proc_root=proc, cgroup_root=cgroups).cgroup
    assert (found.v2, found.delegated) == (True, False)
    assert "not delegated" in found.note
    (proc / "self" / "mounts").write_text(f"cgroup {cgroups}/memory cgroup rw,memory 0 0\n")
    found = diagnose(proc_root=proc, cgroup_root=cgroups).cgroup
    assert not found.v2 and "not a cgroup2 mount" in found.note
    report = diagnose(proc_root=proc, cgroup_root=cgroups)
    assert any("RLIMIT_AS" in gap for gap in report.gaps)


def test_doctor_sees_a_hard_limit_below_the_default() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48)); "
        "from gotstate_persist.extensions._doctor import diagnose; "
        "probe = [p for p in diagnose().limits if p.resource == 'RLIMIT_NOFILE'][0]; "
        "print(probe.hard, probe.effective, probe.note)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("48 48 the hard limit is below the default")


def test_console_script_runs_ext(setup: Setup) -> None:
    url, keys, _ = setup
    exe = Path(sys.executable).parent / "gotstate-persist"
    result = subprocess.run(
        [str(exe), "ext", "ls", url, "--keys", str(keys)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "(no extensions)\n"
