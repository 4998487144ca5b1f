"""``gotstate-persist keys``: generate, rotate and retire, and the keyring file they use.

Rotation is the one routine operation that rewrites a secret, so the file is
replaced atomically (temporary file in the same directory, fsync,
``os.replace``, fsync of the directory) with the permissions it had: a crash
or a full disk leaves the old keyring or the new one, never half of one, and
never a copy readable by more people than before.

``retire`` is the one that can lose data: a record sealed by a retired key
never opens again. So it refuses the primary key, and refuses a key that
still seals any record in the stores named with ``--url`` (counted from the
envelope headers, as ``verify`` counts them, in every namespace: a keyring
serves them all).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._redact import mask_url
from .errors import InvalidArgument
from .sealing import ALGORITHMS, DEFAULT_ENV_VAR, KeyRing, format_key_id

__all__ = [
    "KEYRING_FILE_MODE",
    "MAX_KEYRING_FILE_BYTES",
    "CountKeyIds",
    "add_commands",
    "parse_key_id",
    "read_keyring_file",
    "write_keyring_file",
]

#: An exported ring is about 150 bytes per key; anything far larger is not one
#: (a log file, ``/dev/zero``) and is refused before it is read into memory.
MAX_KEYRING_FILE_BYTES = 1024 * 1024
#: Permissions of a keyring file this tool creates: owner read/write only.
KEYRING_FILE_MODE = 0o600
_MAX_KEY_ID = 2**32 - 1
EXIT_OK = 0
EXIT_FAILED = 1

#: ``count_key_ids(url, catalog)``: records per key id in every namespace of a store.
CountKeyIds = Callable[[str, str | None], Counter[int]]


def read_keyring_file(path: str) -> KeyRing:
    """Load the exported keyring in ``path``; every problem is one ``InvalidArgument``."""
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_KEYRING_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidArgument(f"cannot read keyring file {path!r}: {exc.strerror}") from None
    if len(raw) > MAX_KEYRING_FILE_BYTES:
        raise InvalidArgument(
            f"keyring file {path!r} is over {MAX_KEYRING_FILE_BYTES} bytes, so it is not an "
            "exported keyring; check the --keys path"
        )
    try:
        return KeyRing.load(raw)  # bytes: not UTF-8 is "malformed", never a traceback
    except InvalidArgument as exc:
        raise InvalidArgument(f"keyring file {path!r}: {exc}") from None


def write_keyring_file(path: str, ring: KeyRing) -> None:
    """Replace the keyring file at ``path`` with ``ring``, atomically, keeping its mode.

    The owner is kept too where the caller may set it (root). A symbolic link
    (as secret mounts use) is followed: its target is replaced and the link
    kept. A new file gets :data:`KEYRING_FILE_MODE`.
    """
    target = Path(os.path.realpath(path))
    owner: tuple[int, int] | None = None
    try:
        found = target.stat()
        mode, owner = stat.S_IMODE(found.st_mode), (found.st_uid, found.st_gid)
    except FileNotFoundError:
        mode = KEYRING_FILE_MODE
    except OSError as exc:
        raise InvalidArgument(f"cannot use keyring file {path!r}: {exc.strerror}") from None
    data = (ring.export() + "\n").encode("utf-8")
    try:
        # mkstemp creates the file 0600 and exclusively: no one else can open it meanwhile
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise InvalidArgument(
            f"cannot write beside keyring file {path!r}: {exc.strerror}; nothing changed"
        ) from None
    try:
        with os.fdopen(handle, "wb") as file:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                # root rotating a service's keyring must not leave it unreadable to the service
                with contextlib.suppress(PermissionError):
                    os.fchown(file.fileno(), *owner)
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InvalidArgument(
            f"cannot write keyring file {path!r}: {exc.strerror}; nothing changed"
        ) from None
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; a platform without directory fsync keeps it anyway."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - a file system that refuses directory fsync
        pass
    finally:
        os.close(fd)


def parse_key_id(text: str) -> int:
    """A key id as ``verify`` and ``show`` print it (``0x1a2b3c4d``), or in decimal."""
    cleaned = text.strip().lower()
    try:
        key_id = int(cleaned, 16) if cleaned.startswith("0x") else int(cleaned, 10)
    except ValueError:
        key_id = -1
    if not 1 <= key_id <= _MAX_KEY_ID:
        raise argparse.ArgumentTypeError(
            f"invalid key id {text!r}: use the form verify prints, e.g. 0x1a2b3c4d"
        )
    return key_id


class _StoreAction(argparse.Action):
    """``--url URL [--catalog SQL_URL]``, repeatable: each ``--catalog`` belongs to the
    ``--url`` before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        stores: list[list[str | None]] = list(getattr(namespace, "stores", None) or [])
        if option_string == "--url":
            stores.append([str(values), None])
        elif not stores or stores[-1][1] is not None:
            parser.error("--catalog must follow the --url of the object store it belongs to")
        else:
            stores[-1][1] = str(values)
        namespace.stores = stores


def _cmd_generate(args: argparse.Namespace) -> int:
    sys.stdout.write(KeyRing.generate(args.algorithm).export() + "\n")
    return EXIT_OK


def _cmd_rotate(args: argparse.Namespace) -> int:
    ring = read_keyring_file(args.file)
    old = ring.primary_id
    new = ring.rotate(args.algorithm)
    write_keyring_file(args.file, ring)
    sys.stdout.write(
        f"new primary key {format_key_id(new)} ({ring.algorithm}) in {args.file}; "
        f"{len(ring.key_ids) - 1} older key(s) kept, so existing records still open\n"
        f"next: give every reader the new keyring, then run `gotstate-persist reseal URL "
        f"--keys {args.file} --all-namespaces` and `gotstate-persist keys retire {args.file} "
        f"{format_key_id(old)} --url URL`\n"
    )
    return EXIT_OK


def _cmd_retire(args: argparse.Namespace, count_key_ids: CountKeyIds) -> int:
    ring = read_keyring_file(args.file)
    key_id: int = args.key_id
    if key_id == ring.primary_id:
        raise InvalidArgument(
            f"key {format_key_id(key_id)} is the primary key and cannot be retired; "
            f"run `gotstate-persist keys rotate {args.file}` and reseal first"
        )
    if key_id not in ring.key_ids:
        held = ", ".join(format_key_id(k) for k in ring.key_ids)
        raise InvalidArgument(
            f"key {format_key_id(key_id)} is not in {args.file} (it holds {held}); nothing changed"
        )
    stores: list[list[str | None]] = args.stores or []
    if not stores:
        raise InvalidArgument("name every store sealed with this keyring with --url URL")
    in_use = []
    for url, catalog in stores:
        count = count_key_ids(str(url), catalog)[key_id]
        if count:
            in_use.append(f"{count} record(s) in {mask_url(url)}")
    if in_use:
        sys.stderr.write(
            f"gotstate-persist: key {format_key_id(key_id)} still seals {'; '.join(in_use)}: "
            f"retiring it would make them unreadable. Run `gotstate-persist reseal URL --keys "
            f"{args.file} --all-namespaces` for each store first; nothing changed\n"
        )
        return EXIT_FAILED
    ring.retire(key_id)
    write_keyring_file(args.file, ring)
    sys.stdout.write(
        f"retired key {format_key_id(key_id)} from {args.file}; "
        f"{len(ring.key_ids)} key(s) left, primary {format_key_id(ring.primary_id)}\n"
    )
    return EXIT_OK


def add_commands(
    keys_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    count_key_ids: CountKeyIds,
) -> None:
    """Add ``keys generate|rotate|retire`` to the ``keys`` command's subparsers."""
    generate = keys_sub.add_parser("generate", help="print a new exported keyring")
    generate.add_argument("--algorithm", choices=ALGORITHMS, default="aes-256-gcm")
    generate.set_defaults(func=_cmd_generate)

    rotate = keys_sub.add_parser(
        "rotate",
        help="add a new primary key to a keyring file (older keys kept)",
        description=(
            "Add a new primary key to the exported keyring in FILE, rewriting the file "
            "atomically with its permissions kept. Older keys stay, so existing records "
            "still open; `reseal` then moves them to the new key."
        ),
    )
    rotate.add_argument("file", metavar="FILE", help="exported keyring file to rewrite")
    rotate.add_argument(
        "--algorithm", choices=ALGORITHMS, help="of the new key (default: the primary's)"
    )
    rotate.set_defaults(func=_cmd_rotate)

    retire = keys_sub.add_parser(
        "retire",
        help="drop a key no record needs any more from a keyring file",
        description=(
            "Remove a non-primary key from the keyring in FILE once no record needs it: "
            "every store sealed with the keyring is named with --url and checked in all "
            f"its namespaces first (as `verify` counts). The keyring in ${DEFAULT_ENV_VAR} "
            "or elsewhere is not changed: deploy FILE afterwards."
        ),
    )
    retire.add_argument("file", metavar="FILE", help="exported keyring file to rewrite")
    retire.add_argument(
        "key_id", metavar="KEY_ID", type=parse_key_id, help="e.g. 0x1a2b3c4d, as verify prints"
    )
    retire.add_argument(
        "--url",
        action=_StoreAction,
        dest="stores",
        required=True,
        metavar="URL",
        help="a store sealed with this keyring (repeat for each store)",
    )
    retire.add_argument(
        "--catalog",
        action=_StoreAction,
        dest="stores",
        metavar="SQL_URL",
        help="the SQL catalog of the object store given by the --url before it",
    )
    retire.set_defaults(func=lambda args: _cmd_retire(args, count_key_ids))
