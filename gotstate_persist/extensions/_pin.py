"""The code pin: sha256 of every file of an extension, and how to tell drift.

A registration persists which bytes it approved; activation and every worker
start re-hash the files from disk and refuse to run anything that differs.
This module owns which files belong to an extension, how they are hashed, the
one digest over them that is persisted (:func:`code_sha256`) and the drift
report (:func:`compare`, :func:`check_unchanged`). It never imports the code.

Which files (paths are relative POSIX paths under ``Location.root``):

- **An installed distribution** (see ``_target.installed_distribution``: not
  editable, installed in the ``sys.path`` entry the module was found in, its
  RECORD listing the module): every file its RECORD lists, hashed from disk;
  RECORD's own hashes are never trusted. Skipped: ``__pycache__`` and
  ``*.pyc``; everything under ``*.dist-info/`` (RECORD is not trusted so
  hashing it proves nothing, and INSTALLER, REQUESTED, ``direct_url.json`` and
  installer caches are rewritten by every reinstall of the same code); paths
  that leave the install root (absolute or ``..``: console scripts, which
  each installer regenerates with its own shebang, and data files installed
  elsewhere; the worker imports neither). A listed file that is missing is
  simply absent from the pin, so a comparison reports it removed.
- **Anything else**: a file target's file; a package-directory target's
  directory; a module target's top-level module file or top-level package
  directory (importing ``a.b`` runs ``a/__init__.py`` too). This covers
  editable installs: their RECORD lists only a ``.pth`` file or finder that
  points at the real source, so the real source files under the located
  package directory are hashed instead. Every file under a directory is
  hashed, recursively, except ``__pycache__`` and ``*.pyc``.

Symlinks are never followed out of the pinned tree: inside a walked directory
(or, for a distribution, the install root) a symlink must point at a regular
file inside that same tree and is hashed as that file's bytes; a symlink that
leads outside, dangles or names a directory, and anything that is not a
regular file (FIFO, socket, device), makes the pin refuse with
:class:`~gotstate_persist.errors.ExtensionInvalid` naming it. The target's own
top-level file or directory may itself be a symlink.

Work is bounded: more than :data:`MAX_PIN_FILES` files or
:data:`MAX_PIN_BYTES` bytes in total is refused rather than hashed; files are
read in :data:`HASH_CHUNK_BYTES` chunks. Messages name pinned relative paths
only, never absolute paths (they may come from the environment's
``sys.path``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import msgspec

from ..errors import ExtensionCodeChanged, ExtensionInvalid
from ._target import Location, installed_distribution

__all__ = [
    "CODE_PIN_TAG",
    "HASH_CHUNK_BYTES",
    "MAX_PIN_BYTES",
    "MAX_PIN_FILES",
    "Drift",
    "check_unchanged",
    "code_sha256",
    "compare",
    "pin",
]

logger = logging.getLogger(__name__)

MAX_PIN_FILES = 10_000
MAX_PIN_BYTES = 256 << 20
HASH_CHUNK_BYTES = 1 << 20
# Paths named in a drift message; the error's attributes carry all of them.
MAX_LISTED_PATHS = 20
CODE_PIN_TAG = b"gotstate-persist code pin v1\n"
PYCACHE_DIR = "__pycache__"
BYTECODE_SUFFIX = ".pyc"
SOURCE_SUFFIX = ".py"
DIST_INFO_SUFFIX = ".dist-info"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class Drift(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How current files differ from a pin: sorted relative paths."""

    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """True when nothing changed, was added or was removed."""
        return not (self.changed or self.added or self.removed)


def pin(location: Location) -> dict[str, str]:
    """Relative POSIX path -> sha256 hex of every file of ``location``'s code, from disk.

    The returned dict is ordered by path. Raises ``ExtensionInvalid`` when the
    files are over a bound, unreadable, or break the symlink rule.
    """
    dist = installed_distribution(location)
    problems: list[str] = []
    if dist is not None:
        listed = [PurePosixPath(str(path)) for path in dist.files or ()]
        entries = _record_entries(location, listed, problems)
    else:
        entries = _tree_entries(location, problems)
    if problems:
        raise _refused(location, problems)
    return _hash_entries(location, entries)


def code_sha256(files: Mapping[str, str]) -> str:
    """One sha256 hex digest over a pin; persisted with the registration.

    Byte layout hashed: :data:`CODE_PIN_TAG` (``b"gotstate-persist code pin
    v1\\n"``), then for each ``(path, digest)`` pair in ascending order of
    path (code point order, which equals the order of the UTF-8 bytes): the
    path as UTF-8, one ``0x00`` byte, the 64 lowercase hex characters of the
    digest as ASCII, one ``0x0a`` byte. Paths contain no NUL and digests have
    a fixed length, so the layout is unambiguous. An empty pin hashes the tag
    alone.
    """
    digest = hashlib.sha256(CODE_PIN_TAG)
    for path in sorted(files):
        value = files[path]
        if not path or "\0" in path or not _SHA256_HEX.fullmatch(value):
            raise ExtensionInvalid(
                "a code pin holds an entry that is not a relative path and a lowercase "
                "sha256 hex digest; re-register the extension to pin its files again",
                problems=(f"bad pin entry for path {path!r}",),
            )
        digest.update(path.encode("utf-8") + b"\0" + value.encode("ascii") + b"\n")
    return digest.hexdigest()


def compare(pinned: Mapping[str, str], current: Mapping[str, str]) -> Drift:
    """What differs between a pin taken at registration and one taken now."""
    return Drift(
        changed=tuple(sorted(p for p in pinned.keys() & current.keys() if pinned[p] != current[p])),
        added=tuple(sorted(current.keys() - pinned.keys())),
        removed=tuple(sorted(pinned.keys() - current.keys())),
    )


def check_unchanged(name: str, pinned: Mapping[str, str], location: Location) -> None:
    """Re-hash ``location`` and raise ``ExtensionCodeChanged`` if it differs from ``pinned``."""
    drift = compare(pinned, pin(location))
    if drift.clean:
        return
    logger.warning(
        "extension %r: code differs from its pin (%d changed, %d added, %d removed)",
        name,
        len(drift.changed),
        len(drift.added),
        len(drift.removed),
    )
    raise ExtensionCodeChanged(
        f"the code of extension {name!r} differs from the files pinned when it was "
        f"registered ({len(drift.changed)} changed, {len(drift.added)} added, "
        f"{len(drift.removed)} removed: {_listing(drift)}). Re-register "
        "the extension with expected_version=<its current revision> to accept the new "
        "code, or restore the files.",
        changed=drift.changed,
        added=drift.added,
        removed=drift.removed,
    )


def _listing(drift: Drift) -> str:
    shown: list[str] = []
    budget = MAX_LISTED_PATHS
    for label, paths in (
        ("changed", drift.changed),
        ("added", drift.added),
        ("removed", drift.removed),
    ):
        if paths and budget > 0:
            shown.append(f"{label} {', '.join(paths[:budget])}")
            budget -= len(paths[:budget])
    total = len(drift.changed) + len(drift.added) + len(drift.removed)
    more = f"; and {total - MAX_LISTED_PATHS} more" if total > MAX_LISTED_PATHS else ""
    return "; ".join(shown) + more


def _skipped(name: str) -> bool:
    return name == PYCACHE_DIR or name.endswith(BYTECODE_SUFFIX)


def _record_entries(
    location: Location, listed: list[PurePosixPath], problems: list[str]
) -> list[tuple[str, Path]]:
    """(key, path on disk) of the RECORD files that are pinned; missing files are left out."""
    root = Path(location.root)
    entries: list[tuple[str, Path]] = []
    for relative in listed:
        parts = relative.parts
        if not parts or relative.is_absolute() or ".." in parts:
            continue
        if parts[0].endswith(DIST_INFO_SUFFIX) or any(_skipped(part) for part in parts):
            continue
        kind = _classify(root.joinpath(*parts), root)
        if kind == "file":
            entries.append((relative.as_posix(), root.joinpath(*parts)))
            _check_count(location, len(entries), "files")
        elif kind != "missing":
            problems.append(f"{relative.as_posix()}: {kind}")
    return entries


def _tree_entries(location: Location, problems: list[str]) -> list[tuple[str, Path]]:
    """(key, path on disk) of every file of a module, file or package-directory target."""
    root = Path(location.root)
    file = Path(location.file)
    if location.kind == "file":
        return [(file.name, file)] if file.is_file() else []
    top = file.parent if location.kind == "package" else root / file.relative_to(root).parts[0]
    if location.kind == "module" and top.suffix == SOURCE_SUFFIX:
        return [(top.name, top)] if top.is_file() else []
    if not top.is_dir():
        return []
    tree = Path(os.path.realpath(top))
    entries: list[tuple[str, Path]] = []
    pending = [(top, PurePosixPath(top.name))]
    directories = 0
    while pending:
        directory, prefix = pending.pop()
        directories += 1
        _check_count(location, directories, "directories")
        try:
            children = list(os.scandir(directory))
        except OSError as exc:
            problems.append(f"{prefix.as_posix()}: cannot be listed ({type(exc).__name__})")
            continue
        for child in children:
            if _skipped(child.name):
                continue
            key, path = prefix / child.name, Path(child.path)
            kind = _classify(path, tree)
            if kind == "directory":
                pending.append((path, key))
            elif kind == "file":
                entries.append((key.as_posix(), path))
                _check_count(location, len(entries), "files")
            elif kind != "missing":
                problems.append(f"{key.as_posix()}: {kind}")
    return entries


def _classify(path: Path, tree: Path) -> str:
    """ "file", "directory", "missing", or why ``path`` may not be pinned (symlink rule).

    ``tree`` is the real (symlink-free) directory every pinned file must be in.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({type(exc).__name__})"
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(tree):
        return "leads out of the pinned tree through a symlink (not followed)"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = real.lstat()
        except OSError:
            return "a symlink that does not point at a regular file"
        if stat.S_ISDIR(info.st_mode):
            return "a symlink to a directory (not followed)"
        if not stat.S_ISREG(info.st_mode):
            return "a symlink that does not point at a regular file"
        return "file"
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return "not a regular file"


def _check_count(location: Location, count: int, what: str) -> None:
    if count > MAX_PIN_FILES:
        raise _refused(
            location,
            [
                f"more than {MAX_PIN_FILES} {what}: an extension this large cannot be "
                "pinned; register a smaller package"
            ],
        )


def _hash_entries(location: Location, entries: list[tuple[str, Path]]) -> dict[str, str]:
    total = 0
    for _key, path in entries:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    if total > MAX_PIN_BYTES:
        raise _refused(location, [_size_problem()])
    pinned: dict[str, str] = {}
    read = 0
    for key, path in sorted(entries):
        digest = hashlib.sha256()
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise _refused(location, [f"{key}: cannot be read ({type(exc).__name__})"]) from exc
        with open(descriptor, "rb", buffering=0) as handle:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise _refused(location, [f"{key}: not a regular file"])
            while chunk := handle.read(HASH_CHUNK_BYTES):
                read += len(chunk)
                if read > MAX_PIN_BYTES:
                    raise _refused(location, [_size_problem()])
                digest.update(chunk)
        pinned[key] = digest.hexdigest()
    return pinned


def _size_problem() -> str:
    return (
        f"more than {MAX_PIN_BYTES >> 20} MiB of files: an extension this large cannot be "
        "pinned; register a smaller package"
    )


def _refused(location: Location, problems: list[str]) -> ExtensionInvalid:
    listed = "".join(f"\n  - {problem}" for problem in problems[:MAX_LISTED_PATHS])
    more = len(problems) - MAX_LISTED_PATHS
    suffix = f"\n  - and {more} more" if more > 0 else ""
    return ExtensionInvalid(
        f"cannot pin the code of extension target {location.target!r}:{listed}{suffix}\n"
        "Fix what is listed and try again: a symlink must point at a regular file inside "
        "the pinned directory, FIFOs, sockets and devices cannot be pinned, and the files "
        "must be readable.",
        problems=tuple(problems),
    )
