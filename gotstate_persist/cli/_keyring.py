"""The keyring a ``gotstate-persist`` command uses, and the file it is kept in.

Commands that open records read the exported keyring from ``--keys FILE`` or,
by default, the environment variable the library's ``KeyRing.from_env()``
reads; both are loaded here, so a missing or malformed keyring is the same
one clear error in every command, and a file far too large to be a keyring
is refused before it is read into memory.

Rotation is the one routine operation that rewrites a secret, so the file is
replaced atomically (temporary file in the same directory, fsync,
``os.replace``, fsync of the directory) with the permissions it had: a crash
or a full disk leaves the old keyring or the new one, never half of one, and
never a copy readable by more people than before.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..errors import InvalidArgument
from ..sealing import DEFAULT_ENV_VAR, KeyRing

__all__ = [
    "KEYRING_FILE_MODE",
    "MAX_KEYRING_FILE_BYTES",
    "load_keyring",
    "read_keyring_file",
    "write_keyring_file",
]

#: An exported ring is about 150 bytes per key; anything far larger is not one
#: (a log file, ``/dev/zero``) and is refused before it is read into memory.
MAX_KEYRING_FILE_BYTES = 1024 * 1024
#: Permissions of a keyring file this tool creates: owner read/write only.
KEYRING_FILE_MODE = 0o600

#: What to do about a missing keyring. The existing keyring comes first: a new
#: one cannot open anything already stored, and "generate one" alone led users there.
_NO_KEYRING = (
    f"no keyring: pass --keys FILE or set {DEFAULT_ENV_VAR} to the exported keyring the "
    "store was sealed with (a new keyring cannot open existing data; only for a new store, "
    "create one with `gotstate-persist keys generate`)"
)


def load_keyring(path: str | None) -> KeyRing:
    """The keyring of ``--keys FILE`` or of the environment, or one clear error."""
    if path is not None:
        return read_keyring_file(path)
    if not os.environ.get(DEFAULT_ENV_VAR, "").strip():
        raise InvalidArgument(_NO_KEYRING)
    try:
        return KeyRing.from_env(DEFAULT_ENV_VAR)
    except InvalidArgument as exc:
        raise InvalidArgument(f"${DEFAULT_ENV_VAR}: {exc}") from None


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
