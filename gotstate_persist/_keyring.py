"""The KeyRing: which key seals, which keys open, and the ring's exported JSON form.

A ring is one primary key that seals and older keys that still open, rotated
by appending and retired only after a reseal. It owns the keys but never
their material: sealing and opening are delegated to the key objects of
:mod:`gotstate_persist._keys`, and the only way out for a secret is
:meth:`KeyRing.export`. The envelope (:mod:`gotstate_persist._envelope`)
checks the caller's arguments and reads headers; the ring picks the key.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from typing import Any, Final

from gotstate_persist._keys import (
    CREATE_HINT,
    Bytes,
    Handover,
    Key,
    auth_failed,
    format_key_id,
    malformed,
    new_key,
    parse_key,
)
from gotstate_persist._wire import (
    ALGORITHMS_BY_ID,
    ED25519,
    ENVELOPE_VERSION,
    FIXED,
    MAGIC,
    MAX_BLOB_BYTES,
    algorithm_named,
    is_int,
)
from gotstate_persist.errors import FormatError, IntegrityError, InvalidArgument

__all__ = ["DEFAULT_ENV_VAR", "KeyRing"]

DEFAULT_ENV_VAR: Final = "GOTSTATE_PERSIST_KEYS"

_KEYRING_FORMAT: Final = "gotstate-persist-keyring"
_KEYRING_VERSION: Final = 1
_KEYRING_FIELDS: Final = frozenset({"format", "version", "primary", "keys"})


def _fresh_key_id(taken: dict[int, Key]) -> int:
    # Random rather than sequential ids: two rings generated independently
    # (e.g. per environment) then do not collide, so a blob sealed under one is
    # reported as "unknown key" by the other instead of a confusing tag failure.
    while True:
        key_id = secrets.randbits(32)
        if key_id and key_id not in taken:
            return key_id


class KeyRing:
    """The keys that seal and open blobs: one primary that seals, older ones that open.

    Rotation appends a key instead of replacing one so that records sealed
    before the rotation stay readable until ``store.reseal()`` has rewritten
    them; only then may the old key be retired. Build one with
    :meth:`generate`, :meth:`load` or :meth:`from_env`.

    Equality and hashing are identity on purpose: comparing key material would
    add a timing side channel for no use case.
    """

    __slots__ = ("__weakref__", "_keys", "_lock", "_primary")

    _keys: dict[int, Key]
    _primary: Key
    _lock: threading.Lock

    def __init__(self) -> None:
        raise TypeError(
            "use KeyRing.generate(), KeyRing.load() or KeyRing.from_env() to get a KeyRing"
        )

    @classmethod
    def _from_keys(cls, keys: dict[int, Key], primary_id: int) -> KeyRing:
        ring = object.__new__(cls)
        cls._adopt(ring, keys, primary_id)
        return ring

    def _adopt(self, keys: dict[int, Key], primary_id: int) -> None:
        # __init__'s work, which __init__ refuses so that rings come only from the factories
        self._keys = keys
        self._primary = keys[primary_id]
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------

    @classmethod
    def generate(cls, algorithm: str = "aes-256-gcm") -> KeyRing:
        """A fresh ring of one random key; AES-256-GCM unless integrity-only is wanted."""
        algorithm_id = algorithm_named(algorithm).wire_id
        key_id = _fresh_key_id({})
        return cls._from_keys({key_id: new_key(key_id, algorithm_id)}, key_id)

    @classmethod
    def load(cls, text: str | bytes) -> KeyRing:
        """Parse :meth:`export` output, refusing anything not exactly in that shape.

        Leniency here would turn a truncated paste or an edited id into records
        that silently stop opening later, so every deviation is refused now.
        Messages name the field at fault but never echo its value, which may be
        a secret.
        """
        return cls._from_keys(*_parse_keyring(text))

    @classmethod
    def from_env(cls, name: str = DEFAULT_ENV_VAR) -> KeyRing:
        """Load the ring from an environment variable, the way the CLI does.

        Keeping secrets out of code and config files is the point; a missing
        variable says how to create a ring rather than failing later on seal.
        """
        value = os.environ.get(name, "")
        if not value.strip():
            raise InvalidArgument(
                f"environment variable {name} is not set or empty: it must hold an exported "
                f"keyring; {CREATE_HINT}"
            )
        return cls._from_keys(*_parse_keyring(value))

    # -- inspection ---------------------------------------------------------

    @property
    def primary_id(self) -> int:
        return self._primary.key_id

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(self._keys)

    @property
    def algorithm(self) -> str:
        return self._primary.algorithm

    @property
    def can_seal(self) -> bool:
        return self._primary.can_seal

    def __repr__(self) -> str:
        extra = "" if self.can_seal else ", verify_only=True"
        return (
            f"KeyRing(primary={format_key_id(self._primary.key_id)}, keys={len(self._keys)}, "
            f"algorithm={self.algorithm!r}{extra})"
        )

    # -- sealing and opening ---------------------------------------------------

    def seal_payload(self, codec_id: int, context: bytes, payload: Bytes | Handover) -> bytes:
        """The ring's half of :func:`~gotstate_persist.sealing.seal`; call that instead.

        ``seal`` has checked its arguments and built ``context``; the ring
        writes the header and seals under the primary key it reads once, so a
        concurrent :meth:`rotate` cannot change the key between the size check
        and the seal.
        """
        primary = self._primary
        algorithm_id = primary.algorithm_id
        # Save refuses whatever load would refuse, so an over-size blob is refused now.
        size = len(payload) + ALGORITHMS_BY_ID[algorithm_id].overhead
        if size > MAX_BLOB_BYTES:
            raise FormatError(
                f"payload of {len(payload)} bytes would seal to {size} bytes, over the "
                f"{MAX_BLOB_BYTES}-byte blob limit; store smaller records"
            )
        prefix = FIXED.pack(MAGIC, ENVELOPE_VERSION, algorithm_id, codec_id, primary.key_id)
        return primary.seal(prefix, context, payload)

    def open_blob(self, blob: memoryview, algorithm_id: int, key_id: int, context: bytes) -> bytes:
        """The ring's half of :func:`~gotstate_persist.sealing.open_envelope`; call that instead.

        ``algorithm_id`` and ``key_id`` come from the header that
        ``open_envelope`` has checked for structure; neither is trusted: the
        key named must exist and be of that algorithm, and the key's own check
        decides.
        """
        found = self._keys.get(key_id)
        if found is None:
            # The id is in the clear in every header, so naming it tells nobody
            # anything new, and it tells the operator which keyring to load.
            raise IntegrityError(
                f"blob names key id {format_key_id(key_id)}, which this keyring does not hold "
                f"(it holds {', '.join(format_key_id(k) for k in self.key_ids)}); open it "
                "with the keyring that has that key"
            )
        if found.algorithm_id != algorithm_id:
            raise auth_failed()
        return found.open(blob, context)

    # -- rotation -----------------------------------------------------------

    def rotate(self, algorithm: str | None = None) -> int:
        """Add a new primary key and return its id; old keys keep opening old blobs.

        A verify-only ring refuses: silently minting a private key inside a
        verifier would make it a signer nobody else can verify.
        """
        if not self.can_seal:
            raise InvalidArgument(
                "a verify-only keyring cannot rotate; rotate the signing keyring "
                "and distribute its public() again"
            )
        algorithm_id = (
            self._primary.algorithm_id if algorithm is None else algorithm_named(algorithm).wire_id
        )
        with self._lock:
            key_id = _fresh_key_id(self._keys)
            keys = dict(self._keys)
            keys[key_id] = new_key(key_id, algorithm_id)
            # Readers take one attribute each, so swapping whole objects keeps
            # concurrent seal/open consistent without a lock on the hot path.
            self._keys = keys
            self._primary = keys[key_id]
        return key_id

    def retire(self, key_id: int) -> None:
        """Drop a non-primary key, after ``reseal()`` moved every record off it."""
        if isinstance(key_id, bool) or not isinstance(key_id, int):
            raise InvalidArgument(f"key_id must be an int, got {type(key_id).__name__}")
        with self._lock:
            if key_id == self._primary.key_id:
                raise InvalidArgument(
                    f"key {format_key_id(key_id)} is the primary key and cannot be retired; "
                    "rotate first, reseal, then retire it"
                )
            if key_id not in self._keys:
                raise InvalidArgument(
                    f"key {format_key_id(key_id)} is not in this keyring; "
                    "its ids are listed by key_ids"
                )
            self._keys = {k: v for k, v in self._keys.items() if k != key_id}

    # -- export -------------------------------------------------------------

    def export(self) -> str:
        """The ring as versioned, single-line JSON, fit for a secret store or env var."""
        keys: list[dict[str, Any]] = []
        for key in self._keys.values():
            entry: dict[str, Any] = {"id": key.key_id, "algorithm": key.algorithm}
            entry.update(key.export_fields())
            keys.append(entry)
        document = {
            "format": _KEYRING_FORMAT,
            "version": _KEYRING_VERSION,
            "primary": self._primary.key_id,
            "keys": keys,
        }
        return json.dumps(document, separators=(",", ":"))

    def public(self) -> KeyRing:
        """A verify-only ring for readers that must never be able to forge.

        Only ed25519 has a public half. Symmetric keys of a mixed ring are
        left out: handing them over would hand over the power to seal.
        """
        if self._primary.algorithm_id != ED25519.wire_id:
            raise InvalidArgument(
                f"public() needs an ed25519 keyring; this one's primary key is "
                f"{self.algorithm}, which has no public half. "
                "Use KeyRing.generate('ed25519') for sign/verify separation"
            )
        keys: dict[int, Key] = {}
        for key_id, key in self._keys.items():
            public = key.verify_only()
            if public is not None:
                keys[key_id] = public
        return self._from_keys(keys, self._primary.key_id)


# ------------------------------------------------------------- keyring parsing


_NOT_JSON: Final = object()


def _reject_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise malformed(f"field {name!r} appears twice")
        result[name] = value
    return result


def _parse_keyring(text: object) -> tuple[dict[int, Key], int]:
    """The keys and primary id of an exported ring, refusing any other shape."""
    # Decoding errors are raised outside their handlers so that not even
    # __context__ links to them: UnicodeDecodeError.object and
    # JSONDecodeError.doc hold the whole document, secrets included.
    if isinstance(text, bytes):
        decoded: str | None = None
        with contextlib.suppress(UnicodeDecodeError):
            decoded = text.decode("utf-8")
        if decoded is None:
            raise malformed("it is not UTF-8 text")
        text = decoded
    if not isinstance(text, str):
        raise InvalidArgument(f"a keyring is str or bytes, got {type(text).__name__}")
    document: object = _NOT_JSON
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_fields)
    except InvalidArgument:
        raise
    except (ValueError, RecursionError):
        pass
    if document is _NOT_JSON:
        raise malformed("it is not valid JSON")

    if not isinstance(document, dict):
        raise malformed("the top level must be a JSON object")
    if document.get("format") != _KEYRING_FORMAT:
        raise malformed(f"'format' must be {_KEYRING_FORMAT!r}")
    version = document.get("version")
    if not is_int(version):
        raise malformed("'version' must be an integer")
    if version != _KEYRING_VERSION:
        raise InvalidArgument(
            f"keyring format version {version} is not supported: this gotstate-persist "
            f"reads version {_KEYRING_VERSION}; upgrade gotstate-persist"
        )
    missing = _KEYRING_FIELDS - set(document)
    if missing:
        raise malformed(f"missing fields {sorted(missing)}")
    unknown = set(document) - _KEYRING_FIELDS
    if unknown:
        raise malformed(f"unknown fields {sorted(unknown)}")
    entries = document["keys"]
    if not isinstance(entries, list) or not entries:
        raise malformed("'keys' must be a non-empty list")

    keys: dict[int, Key] = {}
    for index, entry in enumerate(entries):
        key = parse_key(entry, index)
        if key.key_id in keys:
            raise malformed(f"key id {format_key_id(key.key_id)} appears twice")
        keys[key.key_id] = key

    primary = document["primary"]
    if not is_int(primary) or primary not in keys:
        raise malformed("'primary' must be the id of one of its keys")
    return keys, primary
