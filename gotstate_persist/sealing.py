"""The KeyRing and the sealed envelope (design.md, "Envelope (sealed blob), version 1").

Every stored byte passes through :func:`seal` and :func:`open_envelope`, so this
module keeps the surface as small as :mod:`cryptography.fernet`: a keyring, two
functions and one opaque failure. The choices that are easy to get wrong are
made here once, so callers cannot make them:

* The algorithm is taken from the *key*, never from the header. Trusting the
  header would let an attacker who can write to storage downgrade an encrypted
  record to a MAC or signature check under a different secret.
* The context (namespace, key, version) is supplied by the reader from where it
  is reading and bound into the authentication, so a blob copied elsewhere does
  not open. It is never read from the blob.
* Every authentication failure raises one :class:`IntegrityError` with one
  message, without the cryptography exception chained: which check failed is
  information only an attacker needs. The one exception is a key id the
  keyring does not hold: that id is in the clear in every header anyway, and
  naming it tells the operator which keyring to load.
* Structural problems that no authentic blob can have (wrong magic, a newer
  envelope version, an unknown algorithm, too many bytes) are
  :class:`FormatError`, so an operator can tell "not ours / too new" from
  "tampered", and are detected before any cryptographic work.

Key material never appears in ``repr``, in messages, in pickles or in chained
exceptions; the only way out is :meth:`KeyRing.export`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from typing import Any, NoReturn, SupportsIndex, TypeGuard

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from gotstate_persist.errors import FormatError, IntegrityError, InvalidArgument

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ENV_VAR",
    "MAX_BLOB_BYTES",
    "EnvelopeHeader",
    "KeyRing",
    "envelope_overhead",
    "format_key_id",
    "open_envelope",
    "read_header",
    "seal",
]

ALGORITHMS: tuple[str, ...] = ("aes-256-gcm", "chacha20-poly1305", "hmac-sha256", "ed25519")
DEFAULT_ENV_VAR = "GOTSTATE_PERSIST_KEYS"

# Checked before any parsing or cryptography, so a hostile or corrupt object
# cannot make a reader allocate or hash an unbounded amount of data.
MAX_BLOB_BYTES = 16 * 1024 * 1024

_MAGIC = b"GSPB"
_ENVELOPE_VERSION = 1

_AES_GCM = 1
_CHACHA = 2
_HMAC = 3
_ED25519 = 4
_ALGORITHM_IDS: dict[str, int] = {name: i for i, name in enumerate(ALGORITHMS, start=1)}
_ALGORITHM_NAMES: dict[int, str] = {i: name for name, i in _ALGORITHM_IDS.items()}

# magic | envelope version | algorithm id | codec id | key id (u32 BE)
_FIXED = struct.Struct(">4sBBBI")
_FIXED_LEN = _FIXED.size  # 11
_NONCE_LEN = 12
_AEAD_HEADER_LEN = _FIXED_LEN + _NONCE_LEN  # 23
_AEAD_TAG_LEN = 16
_HMAC_LEN = 32
_SIGNATURE_LEN = 64
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_Bytes = bytes | bytearray | memoryview

_HEADER_LEN: dict[int, int] = {
    _AES_GCM: _AEAD_HEADER_LEN,
    _CHACHA: _AEAD_HEADER_LEN,
    _HMAC: _FIXED_LEN,
    _ED25519: _FIXED_LEN,
}
_OVERHEAD: dict[int, int] = {
    _AES_GCM: _AEAD_HEADER_LEN + _AEAD_TAG_LEN,  # 39
    _CHACHA: _AEAD_HEADER_LEN + _AEAD_TAG_LEN,  # 39
    _HMAC: _FIXED_LEN + _HMAC_LEN,  # 43
    _ED25519: _FIXED_LEN + _SIGNATURE_LEN,  # 75
}

_CONTEXT_PREFIX = b"gotstate-persist/v1\x00"
_MAX_VERSION = 2**63 - 1
_MAX_KEY_ID = 2**32 - 1
_SECRET_LEN = 32

_KEYRING_FORMAT = "gotstate-persist-keyring"
_KEYRING_VERSION = 1
_KEYRING_FIELDS = frozenset({"format", "version", "primary", "keys"})
_KEY_FIELDS = frozenset({"id", "algorithm", "secret", "public"})

# One message for every authentication failure: distinguishing "bad tag" from
# "wrong context" would only help an attacker probe. (An unknown key id is
# named instead: it is readable from the header by anyone.)
_AUTH_FAILED = (
    "blob failed authentication: it was altered, moved to another "
    "key/version/namespace, or sealed with a key this keyring does not hold"
)
# A new keyring cannot open what an old one sealed, so the hint names the
# existing keyring first: "generate one" alone has led users to lock themselves out.
_CREATE_HINT = (
    "give the keyring the data was sealed with (a new keyring cannot open existing data); "
    "only for a new store, create one with `gotstate-persist keys generate`"
)


def format_key_id(key_id: int) -> str:
    """The one printed form of a key id (``0x`` and 8 hex digits), used in every message.

    Key ids are not secret (every envelope header carries one in the clear);
    one fixed form lets an operator match ``verify``'s counts, ``show``,
    ``repr(keyring)`` and error messages by eye.
    """
    return f"0x{key_id:08x}"


def _auth_failed() -> IntegrityError:
    return IntegrityError(_AUTH_FAILED)


def _algorithm_id(algorithm: object) -> int:
    if isinstance(algorithm, str):
        algorithm_id = _ALGORITHM_IDS.get(algorithm)
        if algorithm_id is not None:
            return algorithm_id
    raise InvalidArgument(
        f"unknown sealing algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
    )


# --------------------------------------------------------------------------- keys


class _Key:
    """One key of a ring, with its primitive built once.

    Building AESGCM / Ed25519 objects costs more than sealing a small record,
    so each key keeps its primitive for its whole life. Subclasses are chosen by
    algorithm, which is how "the algorithm comes from the key" is enforced:
    the open path never consults the header to decide what to run.
    """

    __slots__ = ("algorithm_id", "key_id")

    algorithm_id: int
    key_id: int

    def __init__(self, key_id: int, algorithm_id: int) -> None:
        self.key_id = key_id
        self.algorithm_id = algorithm_id

    @property
    def algorithm(self) -> str:
        return _ALGORITHM_NAMES[self.algorithm_id]

    @property
    def can_seal(self) -> bool:
        return True

    def __repr__(self) -> str:
        key_id = format_key_id(self.key_id)
        return f"<{type(self).__name__} id={key_id} algorithm={self.algorithm!r}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A pickle is an unreviewed copy of the secret; export() is the one door.
        raise TypeError("keys cannot be pickled or copied; use KeyRing.export()")

    def seal(self, prefix: bytes, context: bytes, payload: _Bytes) -> bytes:
        raise NotImplementedError

    def open(self, blob: memoryview, context: bytes) -> bytes:
        raise NotImplementedError

    def export_fields(self) -> dict[str, str]:
        raise NotImplementedError


class _AeadKey(_Key):
    __slots__ = ("_cipher", "_secret")

    def __init__(self, key_id: int, algorithm_id: int, secret: bytes) -> None:
        super().__init__(key_id, algorithm_id)
        self._secret = secret
        self._cipher: AESGCM | ChaCha20Poly1305 = (
            AESGCM(secret) if algorithm_id == _AES_GCM else ChaCha20Poly1305(secret)
        )

    def seal(self, prefix: bytes, context: bytes, payload: _Bytes) -> bytes:
        # Random 96-bit nonces: with rotation well before 2**30 messages per key
        # the collision probability stays negligible and no counter state is
        # needed across processes.
        nonce = os.urandom(_NONCE_LEN)
        header = prefix + nonce
        return header + self._cipher.encrypt(nonce, payload, header + context)

    def open(self, blob: memoryview, context: bytes) -> bytes:
        if len(blob) < _AEAD_HEADER_LEN + _AEAD_TAG_LEN:
            raise _auth_failed()
        aad = blob[:_AEAD_HEADER_LEN].tobytes() + context
        try:
            return self._cipher.decrypt(
                blob[_FIXED_LEN:_AEAD_HEADER_LEN], blob[_AEAD_HEADER_LEN:], aad
            )
        except InvalidTag:
            raise _auth_failed() from None

    def export_fields(self) -> dict[str, str]:
        return {"secret": _b64(self._secret)}


class _HmacKey(_Key):
    __slots__ = ("_mac", "_secret")

    def __init__(self, key_id: int, secret: bytes) -> None:
        super().__init__(key_id, _HMAC)
        self._secret = secret
        # Keyed once; each message works on a copy, which skips re-deriving the
        # inner and outer pads.
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def seal(self, prefix: bytes, context: bytes, payload: _Bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(prefix)
        mac.update(context)
        mac.update(payload)
        return b"".join((prefix, payload, mac.digest()))

    def open(self, blob: memoryview, context: bytes) -> bytes:
        end = len(blob) - _HMAC_LEN
        if end < _FIXED_LEN:
            raise _auth_failed()
        mac = self._mac.copy()
        mac.update(blob[:_FIXED_LEN])
        mac.update(context)
        mac.update(blob[_FIXED_LEN:end])
        if not hmac.compare_digest(mac.digest(), blob[end:]):
            raise _auth_failed()
        return blob[_FIXED_LEN:end].tobytes()

    def export_fields(self) -> dict[str, str]:
        return {"secret": _b64(self._secret)}


class _Ed25519Key(_Key):
    __slots__ = ("_private", "_public", "_public_raw", "_secret")

    def __init__(
        self, key_id: int, private: Ed25519PrivateKey | None, public: Ed25519PublicKey
    ) -> None:
        super().__init__(key_id, _ED25519)
        self._private = private
        self._secret = None if private is None else private.private_bytes_raw()
        self._public = public
        self._public_raw = public.public_bytes_raw()

    @property
    def can_seal(self) -> bool:
        return self._private is not None

    def verify_only(self) -> _Ed25519Key:
        return _Ed25519Key(self.key_id, None, self._public)

    def seal(self, prefix: bytes, context: bytes, payload: _Bytes) -> bytes:
        if self._private is None:  # KeyRing checks first; this guards internal misuse
            raise InvalidArgument("this key can only verify")
        signature = self._private.sign(b"".join((prefix, context, payload)))
        return b"".join((prefix, payload, signature))

    def open(self, blob: memoryview, context: bytes) -> bytes:
        end = len(blob) - _SIGNATURE_LEN
        if end < _FIXED_LEN:
            raise _auth_failed()
        payload = blob[_FIXED_LEN:end]
        try:
            self._public.verify(blob[end:], b"".join((blob[:_FIXED_LEN], context, payload)))
        except InvalidSignature:
            raise _auth_failed() from None
        return payload.tobytes()

    def export_fields(self) -> dict[str, str]:
        fields = {} if self._secret is None else {"secret": _b64(self._secret)}
        fields["public"] = _b64(self._public_raw)
        return fields


def _new_key(key_id: int, algorithm_id: int) -> _Key:
    if algorithm_id == _ED25519:
        private = Ed25519PrivateKey.generate()
        return _Ed25519Key(key_id, private, private.public_key())
    secret = secrets.token_bytes(_SECRET_LEN)
    if algorithm_id == _HMAC:
        return _HmacKey(key_id, secret)
    return _AeadKey(key_id, algorithm_id, secret)


def _fresh_key_id(taken: dict[int, _Key]) -> int:
    # Random rather than sequential ids: two rings generated independently
    # (e.g. per environment) then do not collide, so a blob sealed under one is
    # reported as "unknown key" by the other instead of a confusing tag failure.
    while True:
        key_id = secrets.randbits(32)
        if key_id and key_id not in taken:
            return key_id


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ----------------------------------------------------------------------- keyring


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

    _keys: dict[int, _Key]
    _primary: _Key
    _lock: threading.Lock

    def __init__(self) -> None:
        raise TypeError(
            "use KeyRing.generate(), KeyRing.load() or KeyRing.from_env() to get a KeyRing"
        )

    @classmethod
    def _from_keys(cls, keys: dict[int, _Key], primary_id: int) -> KeyRing:
        ring = object.__new__(cls)
        ring._keys = keys
        ring._primary = keys[primary_id]
        ring._lock = threading.Lock()
        return ring

    # -- construction -------------------------------------------------------

    @classmethod
    def generate(cls, algorithm: str = "aes-256-gcm") -> KeyRing:
        """A fresh ring of one random key; AES-256-GCM unless integrity-only is wanted."""
        algorithm_id = _algorithm_id(algorithm)
        key_id = _fresh_key_id({})
        return cls._from_keys({key_id: _new_key(key_id, algorithm_id)}, key_id)

    @classmethod
    def load(cls, text: str | bytes) -> KeyRing:
        """Parse :meth:`export` output, refusing anything not exactly in that shape.

        Leniency here would turn a truncated paste or an edited id into records
        that silently stop opening later, so every deviation is refused now.
        Messages name the field at fault but never echo its value, which may be
        a secret.
        """
        return _parse_keyring(text)

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
                f"keyring; {_CREATE_HINT}"
            )
        return _parse_keyring(value)

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
        algorithm_id = self._primary.algorithm_id if algorithm is None else _algorithm_id(algorithm)
        with self._lock:
            key_id = _fresh_key_id(self._keys)
            keys = dict(self._keys)
            keys[key_id] = _new_key(key_id, algorithm_id)
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
        if self._primary.algorithm_id != _ED25519:
            raise InvalidArgument(
                f"public() needs an ed25519 keyring; this one's primary key is "
                f"{self.algorithm}, which has no public half. "
                "Use KeyRing.generate('ed25519') for sign/verify separation"
            )
        keys: dict[int, _Key] = {
            key_id: key.verify_only()
            for key_id, key in self._keys.items()
            if isinstance(key, _Ed25519Key)
        }
        return KeyRing._from_keys(keys, self._primary.key_id)


# ------------------------------------------------------------- keyring parsing


_NOT_JSON = object()


def _malformed(detail: str) -> InvalidArgument:
    return InvalidArgument(f"malformed keyring: {detail}; {_CREATE_HINT}")


def _reject_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _malformed(f"field {name!r} appears twice")
        result[name] = value
    return result


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_b64(value: object, where: str, expected_len: int) -> bytes:
    if not isinstance(value, str):
        raise _malformed(f"{where} must be a base64 string")
    raw: bytes | None = None
    # Raised below, outside the handler: UnicodeEncodeError.object is the secret.
    with contextlib.suppress(binascii.Error, UnicodeEncodeError):
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    if raw is None:
        raise _malformed(f"{where} is not valid base64")
    # Canonical form only: two spellings of one key would defeat comparisons
    # of exported rings in review and in secret scanners.
    if _b64(raw) != value:
        raise _malformed(f"{where} is not canonical base64")
    if len(raw) != expected_len:
        raise _malformed(f"{where} must be {expected_len} bytes, got {len(raw)}")
    return raw


def _parse_key(entry: object, index: int) -> _Key:
    where = f"key #{index}"
    if not isinstance(entry, dict):
        raise _malformed(f"{where} must be an object")
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise _malformed(f"{where} has unknown fields {sorted(unknown)}")
    key_id = entry.get("id")
    if not _is_int(key_id) or not 1 <= key_id <= _MAX_KEY_ID:
        raise _malformed(f"{where}: 'id' must be an integer in 1..{_MAX_KEY_ID}")
    algorithm = entry.get("algorithm")
    algorithm_id = _ALGORITHM_IDS.get(algorithm) if isinstance(algorithm, str) else None
    if algorithm_id is None:
        raise _malformed(f"{where}: 'algorithm' must be one of {', '.join(ALGORITHMS)}")

    if algorithm_id != _ED25519:
        if "public" in entry:
            raise _malformed(f"{where}: 'public' is only allowed for ed25519 keys")
        if "secret" not in entry:
            raise _malformed(f"{where}: 'secret' is missing")
        secret = _decode_b64(entry["secret"], f"{where} 'secret'", _SECRET_LEN)
        if algorithm_id == _HMAC:
            return _HmacKey(key_id, secret)
        return _AeadKey(key_id, algorithm_id, secret)

    if "public" not in entry:
        raise _malformed(f"{where}: 'public' is missing (required for ed25519)")
    public_raw = _decode_b64(entry["public"], f"{where} 'public'", _SECRET_LEN)
    try:
        public = Ed25519PublicKey.from_public_bytes(public_raw)
    except ValueError:
        raise _malformed(f"{where}: 'public' is not a valid ed25519 public key") from None
    private: Ed25519PrivateKey | None = None
    if "secret" in entry:
        secret = _decode_b64(entry["secret"], f"{where} 'secret'", _SECRET_LEN)
        private = Ed25519PrivateKey.from_private_bytes(secret)
        # A mismatched pair would sign blobs that this very ring's public
        # export cannot verify; refuse it now rather than at read time.
        if not hmac.compare_digest(private.public_key().public_bytes_raw(), public_raw):
            raise _malformed(f"{where}: 'public' does not belong to 'secret'")
    return _Ed25519Key(key_id, private, public)


def _parse_keyring(text: object) -> KeyRing:
    # Decoding errors are raised outside their handlers so that not even
    # __context__ links to them: UnicodeDecodeError.object and
    # JSONDecodeError.doc hold the whole document, secrets included.
    if isinstance(text, bytes):
        decoded: str | None = None
        with contextlib.suppress(UnicodeDecodeError):
            decoded = text.decode("utf-8")
        if decoded is None:
            raise _malformed("it is not UTF-8 text")
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
        raise _malformed("it is not valid JSON")

    if not isinstance(document, dict):
        raise _malformed("the top level must be a JSON object")
    if document.get("format") != _KEYRING_FORMAT:
        raise _malformed(f"'format' must be {_KEYRING_FORMAT!r}")
    version = document.get("version")
    if not _is_int(version):
        raise _malformed("'version' must be an integer")
    if version != _KEYRING_VERSION:
        raise InvalidArgument(
            f"keyring format version {version} is not supported: this gotstate-persist "
            f"reads version {_KEYRING_VERSION}; upgrade gotstate-persist"
        )
    missing = _KEYRING_FIELDS - set(document)
    if missing:
        raise _malformed(f"missing fields {sorted(missing)}")
    unknown = set(document) - _KEYRING_FIELDS
    if unknown:
        raise _malformed(f"unknown fields {sorted(unknown)}")
    entries = document["keys"]
    if not isinstance(entries, list) or not entries:
        raise _malformed("'keys' must be a non-empty list")

    keys: dict[int, _Key] = {}
    for index, entry in enumerate(entries):
        key = _parse_key(entry, index)
        if key.key_id in keys:
            raise _malformed(f"key id {format_key_id(key.key_id)} appears twice")
        keys[key.key_id] = key

    primary = document["primary"]
    if not _is_int(primary) or primary not in keys:
        raise _malformed("'primary' must be the id of one of its keys")
    return KeyRing._from_keys(keys, primary)


# ---------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The cleartext header, for reports and routing, *not yet authenticated*.

    Nothing read here may be trusted until :func:`open_envelope` succeeds; it
    exists so tools like ``gotstate-persist verify`` can say which key a blob
    needs without holding that key.
    """

    envelope_version: int
    algorithm_id: int
    codec_id: int
    key_id: int

    @property
    def algorithm(self) -> str:
        return _ALGORITHM_NAMES[self.algorithm_id]


def envelope_overhead(algorithm: str) -> int:
    """Bytes a sealed blob adds to its payload, for quota arithmetic before sealing."""
    return _OVERHEAD[_algorithm_id(algorithm)]


def _view(blob: object) -> memoryview:
    try:
        return memoryview(blob).cast("B")  # type: ignore[arg-type]
    except TypeError:
        raise InvalidArgument(
            f"blob must be bytes, bytearray or a contiguous memoryview, got {type(blob).__name__}"
        ) from None


def _parse_header(view: memoryview) -> tuple[int, int, int, int]:
    """Structural checks only: everything here is true of every blob we ever wrote."""
    size = len(view)
    if size > MAX_BLOB_BYTES:
        raise FormatError(
            f"blob of {size} bytes exceeds the {MAX_BLOB_BYTES}-byte limit; "
            "gotstate-persist never writes blobs this large, so it is not one of ours"
        )
    if size < _FIXED_LEN:
        raise FormatError(
            f"not a gotstate-persist blob: {size} bytes is too short to hold an envelope header"
        )
    magic, envelope_version, algorithm_id, codec_id, key_id = _FIXED.unpack_from(view)
    if magic != _MAGIC:
        raise FormatError("not a gotstate-persist blob: it does not start with the GSPB magic")
    if envelope_version != _ENVELOPE_VERSION:
        if envelope_version == 0:
            raise FormatError("not a gotstate-persist blob: envelope version 0 does not exist")
        raise FormatError(
            f"unsupported envelope version {envelope_version}: the blob was written by a "
            f"newer version of gotstate-persist (this one reads version {_ENVELOPE_VERSION}); "
            "upgrade gotstate-persist to read it"
        )
    header_len = _HEADER_LEN.get(algorithm_id)
    if header_len is None:
        raise FormatError(
            f"unknown algorithm id {algorithm_id}: the blob was written by a newer version "
            "of gotstate-persist, or is not a gotstate-persist blob"
        )
    if size < header_len:
        raise FormatError(
            f"not a gotstate-persist blob: {size} bytes is too short to hold an "
            f"{_ALGORITHM_NAMES[algorithm_id]} envelope header"
        )
    return envelope_version, algorithm_id, codec_id, key_id


def read_header(blob: bytes | memoryview) -> EnvelopeHeader:
    """Parse the header without authenticating it, e.g. to report the key id a blob needs."""
    return EnvelopeHeader(*_parse_header(_view(blob)))


def _context(namespace: str, key: str, version: int) -> bytes:
    # Bound into every MAC/tag/signature so a blob only opens where it was written.
    if not isinstance(namespace, str):
        raise InvalidArgument(f"namespace must be str, got {type(namespace).__name__}")
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be str, got {type(key).__name__}")
    if not _is_int(version):
        raise InvalidArgument(f"version must be an int, got {type(version).__name__}")
    if not 1 <= version <= _MAX_VERSION:
        raise InvalidArgument(f"version must be in 1..{_MAX_VERSION}, got {version}")
    try:
        namespace_raw = namespace.encode("utf-8")
        key_raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("namespace and key must be valid Unicode text") from None
    return b"".join(
        (
            _CONTEXT_PREFIX,
            _U32.pack(len(namespace_raw)),
            namespace_raw,
            _U32.pack(len(key_raw)),
            key_raw,
            _U64.pack(version),
        )
    )


def seal(
    keyring: KeyRing,
    payload: bytes | bytearray | memoryview,
    *,
    codec_id: int,
    namespace: str,
    key: str,
    version: int,
) -> bytes:
    """Seal ``payload`` with the primary key for exactly this namespace/key/version.

    Save refuses whatever load would refuse, so a payload whose blob would
    exceed :data:`MAX_BLOB_BYTES` is a :class:`FormatError` here, not later.
    """
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(f"keyring must be a KeyRing, got {type(keyring).__name__}")
    primary = keyring._primary
    if not primary.can_seal:
        raise InvalidArgument(
            "this keyring is verify-only (made by KeyRing.public()) and cannot seal; "
            "seal with the keyring that holds the private key"
        )
    if not _is_int(codec_id) or not 1 <= codec_id <= 255:
        raise InvalidArgument(f"codec_id must be an int in 1..255, got {codec_id!r}")
    if isinstance(payload, memoryview):
        payload = _view(payload)  # len() must count bytes, not items
    elif not isinstance(payload, (bytes, bytearray)):
        raise InvalidArgument(f"payload must be bytes, got {type(payload).__name__}")
    context = _context(namespace, key, version)
    size = len(payload) + _OVERHEAD[primary.algorithm_id]
    if size > MAX_BLOB_BYTES:
        raise FormatError(
            f"payload of {len(payload)} bytes would seal to {size} bytes, over the "
            f"{MAX_BLOB_BYTES}-byte blob limit; store smaller records"
        )
    prefix = _FIXED.pack(_MAGIC, _ENVELOPE_VERSION, primary.algorithm_id, codec_id, primary.key_id)
    return primary.seal(prefix, context, payload)


def open_envelope(
    keyring: KeyRing, blob: bytes | memoryview, *, namespace: str, key: str, version: int
) -> tuple[int, bytes]:
    """Authenticate and open a blob read from ``namespace``/``key``/``version``.

    Returns ``(codec_id, payload)``; the codec id is only returned once the
    header it sits in has been authenticated, so the decoder choice is trusted.
    """
    if not isinstance(keyring, KeyRing):
        raise InvalidArgument(f"keyring must be a KeyRing, got {type(keyring).__name__}")
    context = _context(namespace, key, version)
    view = _view(blob)
    _, algorithm_id, codec_id, key_id = _parse_header(view)
    found = keyring._keys.get(key_id)
    if found is None:
        # The id is in the clear in every header, so naming it tells nobody
        # anything new, and it tells the operator which keyring to load.
        raise IntegrityError(
            f"blob names key id {format_key_id(key_id)}, which this keyring does not hold "
            f"(it holds {', '.join(format_key_id(k) for k in keyring.key_ids)}); open it "
            "with the keyring that has that key"
        )
    if found.algorithm_id != algorithm_id:
        raise _auth_failed()
    return codec_id, found.open(view, context)
