"""Locating an extension target without running it, and pinning its files by sha256.

Everything here uses real files in ``tmp_path``: modules on a temporary
``sys.path`` entry, package directories, and installed distributions written
as real ``*.dist-info`` directories (RECORD, entry_points.txt,
direct_url.json), which is all ``importlib.metadata`` reads.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gotstate_persist.errors import (
    ExtensionCodeChanged,
    ExtensionInvalid,
    IntegrityError,
    InvalidArgument,
)
from gotstate_persist.extensions._pin import (
    CODE_PIN_TAG,
    MAX_PIN_BYTES,
    MAX_PIN_FILES,
    Drift,
    check_unchanged,
    code_sha256,
    compare,
    pin,
)
from gotstate_persist.extensions._target import (
    ENTRY_POINT_GROUP,
    MODULE_NAME_PREFIX,
    Location,
    installed_distribution,
    locate,
)

EXTENSION_SOURCE = "class Throttle:\n    name = 'throttle'\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _package(root: Path, name: str = "shipping") -> Path:
    """A package with a subpackage and a populated __pycache__."""
    package = root / name
    _write(package / "__init__.py", "from .rules import Throttle\n")
    _write(package / "rules.py", EXTENSION_SOURCE)
    _write(package / "sub" / "__init__.py", "")
    _write(package / "sub" / "helpers.py", "LIMIT = 3\n")
    _write(package / "data" / "table.json", "{}\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "rules.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (package / "sub" / "stale.pyc").write_bytes(b"\x00bytecode")
    return package


def _dist_info(
    site: Path,
    dist: str,
    listed: list[str],
    *,
    entry_points: dict[str, str] | None = None,
    editable: bool = False,
) -> Path:
    """A real installed distribution in ``site``: METADATA, RECORD, entry points.

    RECORD's hashes are deliberately wrong: the pin must never trust them.
    """
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    extra = ["METADATA", "INSTALLER"]
    (info / "INSTALLER").write_text("pip\n")
    if entry_points:
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        extra.append("entry_points.txt")
    if editable:
        (info / "direct_url.json").write_text(
            '{"url": "file:///somewhere", "dir_info": {"editable": true}}'
        )
        extra.append("direct_url.json")
    rows = [f"{path},sha256=AAAA,1" for path in listed]
    rows += [f"{info.name}/{name},sha256=AAAA,1" for name in extra]
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return info


# -- locating -----------------------------------------------------------------


def test_a_module_file_on_sys_path_is_located_and_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path / "site" / "shipmod.py", EXTENSION_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    location = locate("shipmod:Throttle")

    assert location == Location(
        kind="module",
        module="shipmod",
        path_entry=str(source.parent.resolve()),
        file=str(source.resolve()),
        attr="Throttle",
        root=str(source.parent.resolve()),
        distribution="",
        target="shipmod:Throttle",
    )
    assert pin(location) == {"shipmod.py": _sha(source.read_bytes())}
    assert "shipmod" not in sys.modules


def test_a_location_round_trips_through_msgspec_for_the_worker(tmp_path: Path) -> None:
    _write(tmp_path / "plugin.py", EXTENSION_SOURCE)
    location = locate(f"{tmp_path / 'plugin.py'}:Outer.Inner")
    wire = msgspec.msgpack.encode(location)
    assert msgspec.msgpack.decode(wire, type=Location) == location
    with pytest.raises(AttributeError):
        location.attr = "Other"  # type: ignore[misc]


def test_a_file_target_is_stored_absolute_and_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write(tmp_path / "work" / "rules" / "json.py", EXTENSION_SOURCE)
    monkeypatch.chdir(tmp_path / "work")

    location = locate("rules/../rules/json.py:Outer.Inner")

    assert location.kind == "file"
    assert location.file == str(source.resolve())
    assert Path(location.file).is_absolute()
    assert location.root == str(source.parent.resolve())
    assert location.path_entry == ""
    assert location.attr == "Outer.Inner"
    # Loaded under a private name: a file called json.py never shadows the stdlib.
    assert location.module == MODULE_NAME_PREFIX + "json"
    assert pin(location) == {"json.py": _sha(source.read_bytes())}


def test_a_package_directory_pins_every_file_but_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _package(tmp_path)
    monkeypatch.chdir(tmp_path)

    location = locate("./shipping:Throttle")

    assert location.kind == "package"
    assert location.file == str((package / "__init__.py").resolve())
    assert location.root == str(tmp_path.resolve())
    assert location.module == MODULE_NAME_PREFIX + "shipping"
    pinned = pin(location)
    assert pinned == {
        "shipping/__init__.py": _sha(b"from .rules import Throttle\n"),
        "shipping/data/table.json": _sha(b"{}\n"),
        "shipping/rules.py": _sha(EXTENSION_SOURCE.encode()),
        "shipping/sub/__init__.py": _sha(b""),
        "shipping/sub/helpers.py": _sha(b"LIMIT = 3\n"),
    }
    assert list(pinned) == sorted(pinned)


def test_locating_a_dotted_module_runs_no_parent_package_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    canary = tmp_path / "canary"
    trap = f"open({str(canary)!r}, 'w').write('ran')\nraise RuntimeError('imported')\n"
    _write(site / "trapped" / "__init__.py", trap)
    _write(site / "trapped" / "inner" / "__init__.py", trap)
    child = _write(site / "trapped" / "inner" / "child.py", EXTENSION_SOURCE)
    monkeypatch.syspath_prepend(str(site))

    location = locate("trapped.inner.child:Throttle")
    pinned = pin(location)

    assert not canary.exists()
    assert not {"trapped", "trapped.inner", "trapped.inner.child"} & set(sys.modules)
    assert location.kind == "module"
    assert location.module == "trapped.inner.child"
    assert location.file == str(child.resolve())
    assert location.path_entry == str(site.resolve())
    # Importing trapped.inner.child runs trapped/__init__.py: the whole top-level package is pinned.
    assert set(pinned) == {
        "trapped/__init__.py",
        "trapped/inner/__init__.py",
        "trapped/inner/child.py",
    }


# -- refusals -----------------------------------------------------------------


def _problems(target: str) -> tuple[str, ...]:
    with pytest.raises(ExtensionInvalid) as caught:
        locate(target)
    assert isinstance(caught.value, InvalidArgument)
    assert all(problem in str(caught.value) for problem in caught.value.problems)
    return caught.value.problems


def test_every_problem_of_a_module_target_is_reported_at_once() -> None:
    problems = _problems("no_such_module_for_gp_tests.sub:1bad")
    assert len(problems) == 2
    assert "no module or package 'no_such_module_for_gp_tests'" in problems[0]
    assert "'1bad' is not a dotted name" in problems[1]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("sys:x", "'sys' is a built-in module"),
        ("zipimport:x", "'zipimport' is a frozen module"),
        ("math:x", "'math' is a compiled extension module"),
        ("json.nothing_here:x", "package 'json' has no submodule 'nothing_here'"),
        ("json.decoder.deeper:x", "'json.decoder' is a module, not a package"),
        ("json:", "nothing after ':'"),
        (":Throttle", "the module name before ':' is empty"),
        ("json-x.y:Throttle", "is not a dotted module name"),
        ("json:Outer..Inner", "is not a dotted name of identifiers"),
        ("./does/not/exist.py:Throttle", "no file or directory at './does/not/exist.py'"),
        ("no_such_entry_point_for_gp_tests", "no installed distribution declares entry point"),
        ("  ", "the target is empty"),
    ],
)
def test_targets_that_cannot_be_located_are_refused_with_the_reason(
    target: str, expected: str
) -> None:
    problems = _problems(target)
    assert len(problems) == 1
    assert expected in problems[0]


def test_a_namespace_package_is_refused_in_either_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "site" / "loose" / "rules.py", EXTENSION_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path / "site")

    assert "'loose' is a namespace package" in _problems("loose.rules:Throttle")[0]
    assert "has no __init__.py" in _problems("./loose:Throttle")[0]


def test_a_non_source_file_and_a_missing_attr_are_both_reported(tmp_path: Path) -> None:
    _write(tmp_path / "notes.txt", "hello")
    problems = _problems(f"{tmp_path / 'notes.txt'}:")
    assert len(problems) == 2
    assert "is not a Python source file" in problems[0]
    assert "nothing after ':'" in problems[1]


def test_refusals_do_not_echo_sys_path_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_dir = tmp_path / "token-1234"
    _write(secret_dir / "present.py", EXTENSION_SOURCE)
    monkeypatch.syspath_prepend(str(secret_dir))
    with pytest.raises(ExtensionInvalid) as caught:
        locate("present.missing:Throttle")
    assert "token-1234" not in str(caught.value)
    assert "'present' is a module, not a package" in caught.value.problems[0]


def test_a_package_directory_named_without_a_slash_gets_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package(tmp_path, "localpkg_for_gp_tests")
    monkeypatch.chdir(tmp_path)
    assert "write './localpkg_for_gp_tests:...'" in _problems("localpkg_for_gp_tests:X")[0]


# -- installed distributions and entry points ---------------------------------


def _installed(site: Path, *, editable: bool = False) -> None:
    _write(site / "extpkg" / "__init__.py", "")
    _write(site / "extpkg" / "impl.py", EXTENSION_SOURCE)
    _write(site / "extpkg" / "__pycache__" / "impl.cpython-311.pyc", "bytecode")
    _write(site / "extpkg" / "unlisted.py", "# not in RECORD\n")
    _write(site / "extdist_loader.pth", "")
    listed = [
        "extpkg/__init__.py",
        "extpkg/impl.py",
        "extpkg/__pycache__/impl.cpython-311.pyc",
        "extpkg/gone.py",
        "extdist_loader.pth",
        "../../bin/extpkg-cli",
    ]
    _dist_info(
        site,
        "extdist",
        listed,
        entry_points={"shipping-throttle": "extpkg.impl:Throttle"},
        editable=editable,
    )


def test_an_entry_point_pins_the_files_its_record_lists_hashed_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _installed(site)
    monkeypatch.syspath_prepend(str(site))

    location = locate("shipping-throttle")

    assert location.kind == "module"
    assert location.module == "extpkg.impl"
    assert location.attr == "Throttle"
    assert location.distribution == "extdist"
    assert location.path_entry == location.root == str(site.resolve())
    assert location.target == "shipping-throttle"
    dist = installed_distribution(location)
    assert dist is not None
    assert dist.name == "extdist"
    # Listed and present, hashed from disk (RECORD says AAAA); the listed but
    # missing file, bytecode, dist-info, and paths outside the root are not pinned;
    # a file RECORD does not list is not part of the distribution.
    assert pin(location) == {
        "extdist_loader.pth": _sha(b""),
        "extpkg/__init__.py": _sha(b""),
        "extpkg/impl.py": _sha(EXTENSION_SOURCE.encode()),
    }
    assert "extpkg" not in sys.modules


def test_a_module_target_of_an_installed_distribution_remembers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _installed(site)
    monkeypatch.syspath_prepend(str(site))

    location = locate("extpkg.impl:Throttle")

    assert location.distribution == "extdist"
    assert "extpkg/unlisted.py" not in pin(location)


def test_an_editable_install_pins_the_real_source_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site, src = tmp_path / "site", tmp_path / "project" / "src"
    _write(site / "_editable_impl_extdist.pth", f"{src}\n")
    _dist_info(
        site,
        "extdist",
        ["_editable_impl_extdist.pth"],
        entry_points={"shipping-throttle": "extpkg.impl:Throttle"},
        editable=True,
    )
    _package(src, "extpkg")
    _write(src / "extpkg" / "impl.py", EXTENSION_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(src))  # what the .pth does at start-up

    location = locate("shipping-throttle")

    assert location.distribution == "extdist"
    assert location.path_entry == str(src.resolve())
    assert installed_distribution(location) is None
    pinned = pin(location)
    assert "extpkg/impl.py" in pinned
    assert "_editable_impl_extdist.pth" not in pinned
    assert set(pinned) == {
        f"extpkg/{path.relative_to(src / 'extpkg').as_posix()}"
        for path in (src / "extpkg").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    (src / "extpkg" / "impl.py").write_text(EXTENSION_SOURCE + "# edited\n")
    with pytest.raises(ExtensionCodeChanged) as caught:
        check_unchanged("throttle", pinned, location)
    assert caught.value.changed == ("extpkg/impl.py",)


def test_editable_record_listing_the_module_is_still_pinned_from_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _installed(site, editable=True)
    monkeypatch.syspath_prepend(str(site))

    location = locate("shipping-throttle")

    assert installed_distribution(location) is None
    assert "extpkg/unlisted.py" in pin(location)


def test_the_example_plugin_installed_editable_is_pinned_from_its_source() -> None:
    dist = importlib.metadata.distribution("gotstate-persist-dbm")
    assert '"editable":true' in (dist.read_text("direct_url.json") or "").replace(" ", "")

    location = locate("gotstate_persist_dbm:DbmBackend")

    package = Path(location.file).parent
    assert package.name == "gotstate_persist_dbm"
    assert (package.parent / location.module / "__init__.py").is_file()
    pinned = pin(location)
    on_disk = {
        f"gotstate_persist_dbm/{path.relative_to(package).as_posix()}": _sha(path.read_bytes())
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert pinned == on_disk
    assert "gotstate_persist_dbm/_backend.py" in pinned


def test_an_entry_point_name_declared_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for dist in ("firstdist", "seconddist"):
        _dist_info(tmp_path / dist, dist, [], entry_points={"twice": "extpkg.impl:Throttle"})
        monkeypatch.syspath_prepend(str(tmp_path / dist))
    problems = _problems("twice")
    assert "declared by 2 distributions (firstdist, seconddist)" in problems[0]


def test_an_entry_point_without_an_attribute_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "site" / "extmod.py", EXTENSION_SOURCE)
    _dist_info(tmp_path / "site", "extdist", ["extmod.py"], entry_points={"bare": "extmod"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert "the entry point's value has no ':Class' part" in _problems("bare")[0]


# -- drift ----------------------------------------------------------------------


def _registered(tmp_path: Path) -> tuple[Location, dict[str, str], Path]:
    package = _package(tmp_path)
    location = locate(f"{package}:Throttle")
    return location, pin(location), package


def test_edited_added_and_removed_files_are_each_named(tmp_path: Path) -> None:
    location, pinned, package = _registered(tmp_path)
    check_unchanged("throttle", pinned, location)

    (package / "rules.py").write_text(EXTENSION_SOURCE + "evil = True\n")
    _write(package / "sub" / "new.py", "")
    (package / "sub" / "helpers.py").unlink()

    with pytest.raises(ExtensionCodeChanged) as caught:
        check_unchanged("throttle", pinned, location)
    error = caught.value
    assert isinstance(error, IntegrityError)
    assert error.changed == ("shipping/rules.py",)
    assert error.added == ("shipping/sub/new.py",)
    assert error.removed == ("shipping/sub/helpers.py",)
    message = str(error)
    for path in ("shipping/rules.py", "shipping/sub/new.py", "shipping/sub/helpers.py"):
        assert path in message
    assert "expected_version=" in message
    assert "restore the files" in message
    assert str(tmp_path) not in message


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_each_kind_of_change_alone_is_reported(tmp_path: Path, change: str) -> None:
    location, pinned, package = _registered(tmp_path)
    if change == "edit":
        (package / "sub" / "__init__.py").write_text("x = 1\n")
    elif change == "add":
        _write(package / "data" / "more.json", "[]")
    else:
        (package / "data" / "table.json").unlink()
    drift = compare(pinned, pin(location))
    expected = {
        "edit": Drift(changed=("shipping/sub/__init__.py",)),
        "add": Drift(added=("shipping/data/more.json",)),
        "remove": Drift(removed=("shipping/data/table.json",)),
    }
    assert drift == expected[change]
    assert not drift.clean


def test_bytecode_changes_are_ignored(tmp_path: Path) -> None:
    location, pinned, package = _registered(tmp_path)
    (package / "__pycache__" / "rules.cpython-311.pyc").write_bytes(b"other bytecode")
    _write(package / "sub" / "__pycache__" / "helpers.cpython-311.pyc", "new")
    (package / "sub" / "stale.pyc").unlink()
    (package / "extra.pyc").write_bytes(b"\x00")
    check_unchanged("throttle", pinned, location)


def test_a_removed_file_target_is_reported_removed(tmp_path: Path) -> None:
    source = _write(tmp_path / "plugin.py", EXTENSION_SOURCE)
    location = locate(f"{source}:Throttle")
    pinned = pin(location)
    source.unlink()
    with pytest.raises(ExtensionCodeChanged) as caught:
        check_unchanged("throttle", pinned, location)
    assert caught.value.removed == ("plugin.py",)


def test_a_long_drift_lists_twenty_paths_in_the_message_and_all_in_the_error(
    tmp_path: Path,
) -> None:
    location, pinned, package = _registered(tmp_path)
    for index in range(30):
        _write(package / "gen" / f"m{index:02d}.py", "")
    with pytest.raises(ExtensionCodeChanged) as caught:
        check_unchanged("throttle", pinned, location)
    assert len(caught.value.added) == 30
    message = str(caught.value)
    assert "shipping/gen/m19.py" in message
    assert "shipping/gen/m20.py" not in message
    assert "and 10 more" in message


def test_the_pin_is_stable_and_independent_of_listing_order(tmp_path: Path) -> None:
    names = [f"f{index}.py" for index in range(40)]
    for directory, order in (("one", names), ("two", list(reversed(names)))):
        for name in order:
            _write(tmp_path / directory / "pkg" / name, name)
        _write(tmp_path / directory / "pkg" / "__init__.py", "")
    first = locate(f"{tmp_path / 'one' / 'pkg'}:X")
    second = locate(f"{tmp_path / 'two' / 'pkg'}:X")
    assert pin(first) == pin(first) == pin(second)
    assert list(pin(second)) == sorted(pin(first))
    assert code_sha256(pin(first)) == code_sha256(pin(second))


# -- symlinks, special files and bounds -------------------------------------------


def test_a_symlink_to_a_file_inside_the_package_is_hashed_as_that_file(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "alias.py").symlink_to(package / "rules.py")
    pinned = pin(locate(f"{package}:Throttle"))
    assert pinned["shipping/alias.py"] == pinned["shipping/rules.py"]


@pytest.mark.parametrize("kind", ["outside", "directory", "dangling", "fifo"])
def test_symlinks_out_of_the_tree_and_special_files_are_refused(tmp_path: Path, kind: str) -> None:
    package = _package(tmp_path / "project")
    location = locate(f"{package}:Throttle")
    outside = _write(tmp_path / "elsewhere.py", "x = 1\n")
    odd = package / "odd"
    if kind == "outside":
        odd.symlink_to(outside)
    elif kind == "directory":
        odd.symlink_to(package / "sub", target_is_directory=True)
    elif kind == "dangling":
        odd.symlink_to(package / "nothing")
    else:
        os.mkfifo(odd)
    with pytest.raises(ExtensionInvalid) as caught:
        pin(location)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("shipping/odd: ")
    assert "elsewhere" not in str(caught.value)


def test_the_package_itself_may_be_a_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _package(tmp_path / "checkout", "shipping")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "shipping").symlink_to(real, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    location = locate("shipping.rules:Throttle")
    assert "shipping/sub/helpers.py" in pin(location)


def test_more_files_than_the_bound_are_refused(tmp_path: Path) -> None:
    package = tmp_path / "big"
    _write(package / "__init__.py", "")
    for index in range(MAX_PIN_FILES):
        (package / f"f{index}.txt").touch()
    with pytest.raises(ExtensionInvalid) as caught:
        pin(locate(f"{package}:X"))
    assert f"more than {MAX_PIN_FILES} files" in caught.value.problems[0]


def test_more_bytes_than_the_bound_are_refused(tmp_path: Path) -> None:
    package = tmp_path / "heavy"
    _write(package / "__init__.py", "#")  # one byte over the bound with the blob below
    with (package / "blob.bin").open("wb") as handle:
        handle.truncate(MAX_PIN_BYTES)  # sparse: costs no disk
    with pytest.raises(ExtensionInvalid) as caught:
        pin(locate(f"{package}:X"))
    assert "more than 256 MiB" in caught.value.problems[0]


# -- code_sha256 and compare ------------------------------------------------------

_paths = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\0"),
    min_size=1,
    max_size=20,
)
_digests = st.binary(min_size=8, max_size=8).map(_sha)
_pins = st.dictionaries(_paths, _digests, max_size=12)


def test_code_sha256_byte_layout_is_fixed() -> None:
    a, b = _sha(b"a"), _sha(b"b")
    expected = hashlib.sha256(
        CODE_PIN_TAG + b"pkg/a.py\x00" + a.encode() + b"\n" + b"pkg/b.py\x00" + b.encode() + b"\n"
    ).hexdigest()
    assert code_sha256({"pkg/b.py": b, "pkg/a.py": a}) == expected
    assert code_sha256({}) == hashlib.sha256(b"gotstate-persist code pin v1\n").hexdigest()


@pytest.mark.parametrize(
    "files", [{"": _sha(b"")}, {"a\0b": _sha(b"")}, {"a.py": "ABC"}, {"a.py": _sha(b"").upper()}]
)
def test_code_sha256_refuses_malformed_entries(files: dict[str, str]) -> None:
    with pytest.raises(ExtensionInvalid):
        code_sha256(files)


@given(_pins)
def test_code_sha256_ignores_insertion_order(files: dict[str, str]) -> None:
    reordered = dict(reversed(list(files.items())))
    assert code_sha256(reordered) == code_sha256(files)


@given(_pins, _paths, _digests)
def test_code_sha256_changes_with_any_entry(files: dict[str, str], path: str, digest: str) -> None:
    other = {**files, path: digest}
    if other != files:
        assert code_sha256(other) != code_sha256(files)


@given(_pins)
def test_compare_of_a_pin_with_itself_is_clean(files: dict[str, str]) -> None:
    assert compare(files, dict(files)).clean


@given(_pins, _pins)
def test_compare_reports_exactly_the_differences(
    pinned: dict[str, str], current: dict[str, str]
) -> None:
    drift = compare(pinned, current)
    assert set(drift.added) == current.keys() - pinned.keys()
    assert set(drift.removed) == pinned.keys() - current.keys()
    assert set(drift.changed) == {
        path for path in pinned.keys() & current.keys() if pinned[path] != current[path]
    }
    for paths in (drift.changed, drift.added, drift.removed):
        assert list(paths) == sorted(paths)
    assert drift.clean == (pinned == current)


def test_a_module_of_a_regular_installed_distribution_pins_its_record_files() -> None:
    location = locate("msgspec:Struct")

    assert location.distribution == "msgspec"
    dist = installed_distribution(location)
    assert dist is not None
    pinned = pin(location)
    init = Path(location.file)
    assert pinned["msgspec/__init__.py"] == _sha(init.read_bytes())
    assert not [path for path in pinned if ".dist-info/" in path or path.endswith(".pyc")]
    listed = {str(path) for path in dist.files or ()}
    assert set(pinned) <= listed


def test_a_module_shadowing_an_installed_distribution_is_pinned_from_its_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _installed(tmp_path / "site")
    shadow = tmp_path / "shadow"
    _write(shadow / "extpkg" / "__init__.py", "")
    _write(shadow / "extpkg" / "impl.py", "class Throttle: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(shadow))  # found first, as an import would

    location = locate("extpkg.impl:Throttle")

    assert location.path_entry == str(shadow.resolve())
    assert location.distribution == ""
    assert installed_distribution(location) is None
    assert pin(location) == {
        "extpkg/__init__.py": _sha(b""),
        "extpkg/impl.py": _sha(b"class Throttle: ...\n"),
    }
