"""One key of a keyring: its primitive, its entry in the keyring JSON, and its secrecy.

The key classes are the only objects that hold key material, so everything
that touches a secret lives here: building the primitive, sealing and opening
with it, reading and writing the one JSON entry that carries it. The keyring
(:mod:`gotstate_persist._keyring`) holds keys but never looks inside them.

A key is chosen by algorithm when it is built, and the open path runs the
key's own check: this is how "the algorithm comes from the key, never from the
header" is enforced. Every authentication failure is one opaque
:class:`~gotstate_persist.errors.IntegrityError`, and no secret appears in a
``repr``, a message, a pickle or a chained exception.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from typing import Final, NoReturn, SupportsIndex

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from gotstate_persist._wire import (
    AEAD_HEADER_LEN,
    AEAD_TAG_LEN,
    AES_256_GCM,
    ALGORITHMS,
    ALGORITHMS_BY_ID,
    ALGORITHMS_BY_NAME,
    ED25519,
    FIXED_LEN,
    HMAC_LEN,
    HMAC_SHA256,
    NONCE_LEN,
    SIGNATURE_LEN,
    is_int,
)
from gotstate_persist.errors import IntegrityError, InvalidArgument

__all__ = [
    "CREATE_HINT",
    "Bytes",
    "Handover",
    "Key",
    "auth_failed",
    "format_key_id",
    "malformed",
    "new_key",
    "parse_key",
]

Bytes = bytes | bytearray | memoryview


class Handover:
    """A payload passed to sealing by its only holder, who gives it up.

    Sealing takes the bytes out (:meth:`take`) and keeps no other reference,
    so AEAD sealing frees the payload before it joins header and ciphertext:
    a large save holds two copies of its data at a time, not three (issue 16,
    peak memory of ``save_machine``). The handover remembers the key that
    sealed it, so a writer that loses its version to another gets the payload
    back out of its own blob (:meth:`reopen`) even if that key was rotated
    out or retired meanwhile.
    """

    __slots__ = ("_payload", "_sealer")

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._sealer: Key | None = None

    def __len__(self) -> int:
        return len(self._payload)

    def take(self, sealer: Key) -> bytes:
        """The payload, for ``sealer`` to seal; this handover is left empty."""
        payload, self._payload = self._payload, b""
        self._sealer = sealer
        return payload

    def reopen(self, blob: bytes, context: bytes) -> bytes:
        """The payload again, from the ``blob`` it was sealed into for ``context``."""
        if self._sealer is None:
            raise InvalidArgument("nothing was sealed from this payload yet")
        return self._sealer.open(memoryview(blob), context)


def _taken(payload: Bytes | Handover, sealer: Key) -> Bytes:
    return payload.take(sealer) if isinstance(payload, Handover) else payload


_MAX_KEY_ID: Final = 2**32 - 1
_SECRET_LEN: Final = 32
_KEY_FIELDS: Final = frozenset({"id", "algorithm", "secret", "public"})

# One message for every authentication failure: distinguishing "bad tag" from
# "wrong context" would only help an attacker probe. (An unknown key id is
# named instead: it is readable from the header by anyone.)
_AUTH_FAILED: Final = (
    "blob failed authentication: it was altered, moved to another "
    "key/version/namespace, or sealed with a key this keyring does not hold"
)
# A new keyring cannot open what an old one sealed, so the hint names the
# existing keyring first: "generate one" alone has led users to lock themselves out.
CREATE_HINT: Final = (
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


def auth_failed() -> IntegrityError:
    """The one error for every authentication failure."""
    return IntegrityError(_AUTH_FAILED)


def malformed(detail: str) -> InvalidArgument:
    """A keyring document that is not exactly what :meth:`KeyRing.export` writes."""
    return InvalidArgument(f"malformed keyring: {detail}; {CREATE_HINT}")


# --------------------------------------------------------------------------- keys


class Key:
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
        return ALGORITHMS_BY_ID[self.algorithm_id].name

    @property
    def can_seal(self) -> bool:
        return True

    def __repr__(self) -> str:
        key_id = format_key_id(self.key_id)
        return f"<{type(self).__name__} id={key_id} algorithm={self.algorithm!r}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A pickle is an unreviewed copy of the secret; export() is the one door.
        raise TypeError("keys cannot be pickled or copied; use KeyRing.export()")

    def verify_only(self) -> Key | None:
        """This key without its power to seal, or None if it has no public half."""
        return None

    def seal(self, prefix: bytes, context: bytes, payload: Bytes | Handover) -> bytes:
        raise NotImplementedError

    def open(self, blob: memoryview, context: bytes) -> bytes:
        raise NotImplementedError

    def export_fields(self) -> dict[str, str]:
        raise NotImplementedError


class _AeadKey(Key):
    __slots__ = ("_cipher", "_secret")

    def __init__(self, key_id: int, algorithm_id: int, secret: bytes) -> None:
        super().__init__(key_id, algorithm_id)
        self._secret = secret
        self._cipher: AESGCM | ChaCha20Poly1305 = (
            AESGCM(secret) if algorithm_id == AES_256_GCM.wire_id else ChaCha20Poly1305(secret)
        )

    def seal(self, prefix: bytes, context: bytes, payload: Bytes | Handover) -> bytes:
        # Random 96-bit nonces: with rotation well before 2**30 messages per key
        # the collision probability stays negligible and no counter state is
        # needed across processes.
        nonce = os.urandom(NONCE_LEN)
        header = prefix + nonce
        # a handed-over payload's last reference is the argument: it is freed
        # before the join, which then copies the ciphertext alone
        sealed = self._cipher.encrypt(nonce, _taken(payload, self), header + context)
        return header + sealed

    def open(self, blob: memoryview, context: bytes) -> bytes:
        if len(blob) < AEAD_HEADER_LEN + AEAD_TAG_LEN:
            raise auth_failed()
        aad = blob[:AEAD_HEADER_LEN].tobytes() + context
        try:
            return self._cipher.decrypt(
                blob[FIXED_LEN:AEAD_HEADER_LEN], blob[AEAD_HEADER_LEN:], aad
            )
        except InvalidTag:
            raise auth_failed() from None

    def export_fields(self) -> dict[str, str]:
        return {"secret": _b64(self._secret)}


class _HmacKey(Key):
    __slots__ = ("_mac", "_secret")

    def __init__(self, key_id: int, secret: bytes) -> None:
        super().__init__(key_id, HMAC_SHA256.wire_id)
        self._secret = secret
        # Keyed once; each message works on a copy, which skips re-deriving the
        # inner and outer pads.
        self._mac = hmac.new(secret, digestmod=hashlib.sha256)

    def seal(self, prefix: bytes, context: bytes, payload: Bytes | Handover) -> bytes:
        payload = _taken(payload, self)
        mac = self._mac.copy()
        mac.update(prefix)
        mac.update(context)
        mac.update(payload)
        return b"".join((prefix, payload, mac.digest()))

    def open(self, blob: memoryview, context: bytes) -> bytes:
        end = len(blob) - HMAC_LEN
        if end < FIXED_LEN:
            raise auth_failed()
        mac = self._mac.copy()
        mac.update(blob[:FIXED_LEN])
        mac.update(context)
        mac.update(blob[FIXED_LEN:end])
        if not hmac.compare_digest(mac.digest(), blob[end:]):
            raise auth_failed()
        return blob[FIXED_LEN:end].tobytes()

    def export_fields(self) -> dict[str, str]:
        return {"secret": _b64(self._secret)}


class _Ed25519Key(Key):
    __slots__ = ("_private", "_public", "_public_raw", "_secret")

    def __init__(
        self, key_id: int, private: Ed25519PrivateKey | None, public: Ed25519PublicKey
    ) -> None:
        super().__init__(key_id, ED25519.wire_id)
        self._private = private
        self._secret = None if private is None else private.private_bytes_raw()
        self._public = public
        self._public_raw = public.public_bytes_raw()

    @property
    def can_seal(self) -> bool:
        return self._private is not None

    def verify_only(self) -> _Ed25519Key:
        return _Ed25519Key(self.key_id, None, self._public)

    def seal(self, prefix: bytes, context: bytes, payload: Bytes | Handover) -> bytes:
        if self._private is None:  # KeyRing checks first; this guards internal misuse
            raise InvalidArgument("this key can only verify")
        payload = _taken(payload, self)
        signature = self._private.sign(b"".join((prefix, context, payload)))
        return b"".join((prefix, payload, signature))

    def open(self, blob: memoryview, context: bytes) -> bytes:
        end = len(blob) - SIGNATURE_LEN
        if end < FIXED_LEN:
            raise auth_failed()
        payload = blob[FIXED_LEN:end]
        try:
            self._public.verify(blob[end:], b"".join((blob[:FIXED_LEN], context, payload)))
        except InvalidSignature:
            raise auth_failed() from None
        return payload.tobytes()

    def export_fields(self) -> dict[str, str]:
        fields = {} if self._secret is None else {"secret": _b64(self._secret)}
        fields["public"] = _b64(self._public_raw)
        return fields


def new_key(key_id: int, algorithm_id: int) -> Key:
    """A fresh random key of the algorithm with this wire id."""
    if algorithm_id == ED25519.wire_id:
        private = Ed25519PrivateKey.generate()
        return _Ed25519Key(key_id, private, private.public_key())
    secret = secrets.token_bytes(_SECRET_LEN)
    if algorithm_id == HMAC_SHA256.wire_id:
        return _HmacKey(key_id, secret)
    return _AeadKey(key_id, algorithm_id, secret)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# ------------------------------------------------------------ the JSON entry


def _decode_b64(value: object, where: str, expected_len: int) -> bytes:
    if not isinstance(value, str):
        raise malformed(f"{where} must be a base64 string")
    raw: bytes | None = None
    # Raised below, outside the handler: UnicodeEncodeError.object is the secret.
    with contextlib.suppress(binascii.Error, UnicodeEncodeError):
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    if raw is None:
        raise malformed(f"{where} is not valid base64")
    # Canonical form only: two spellings of one key would defeat comparisons
    # of exported rings in review and in secret scanners.
    if _b64(raw) != value:
        raise malformed(f"{where} is not canonical base64")
    if len(raw) != expected_len:
        raise malformed(f"{where} must be {expected_len} bytes, got {len(raw)}")
    return raw


def parse_key(entry: object, index: int) -> Key:
    """The key that entry ``index`` of a keyring document's ``keys`` describes."""
    where = f"key #{index}"
    if not isinstance(entry, dict):
        raise malformed(f"{where} must be an object")
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise malformed(f"{where} has unknown fields {sorted(unknown)}")
    key_id = entry.get("id")
    if not is_int(key_id) or not 1 <= key_id <= _MAX_KEY_ID:
        raise malformed(f"{where}: 'id' must be an integer in 1..{_MAX_KEY_ID}")
    name = entry.get("algorithm")
    algorithm = ALGORITHMS_BY_NAME.get(name) if isinstance(name, str) else None
    if algorithm is None:
        raise malformed(f"{where}: 'algorithm' must be one of {', '.join(ALGORITHMS)}")
    algorithm_id = algorithm.wire_id

    if algorithm_id != ED25519.wire_id:
        if "public" in entry:
            raise malformed(f"{where}: 'public' is only allowed for ed25519 keys")
        if "secret" not in entry:
            raise malformed(f"{where}: 'secret' is missing")
        secret = _decode_b64(entry["secret"], f"{where} 'secret'", _SECRET_LEN)
        if algorithm_id == HMAC_SHA256.wire_id:
            return _HmacKey(key_id, secret)
        return _AeadKey(key_id, algorithm_id, secret)

    if "public" not in entry:
        raise malformed(f"{where}: 'public' is missing (required for ed25519)")
    public_raw = _decode_b64(entry["public"], f"{where} 'public'", _SECRET_LEN)
    try:
        public = Ed25519PublicKey.from_public_bytes(public_raw)
    except ValueError:
        raise malformed(f"{where}: 'public' is not a valid ed25519 public key") from None
    private: Ed25519PrivateKey | None = None
    if "secret" in entry:
        secret = _decode_b64(entry["secret"], f"{where} 'secret'", _SECRET_LEN)
        private = Ed25519PrivateKey.from_private_bytes(secret)
        # A mismatched pair would sign blobs that this very ring's public
        # export cannot verify; refuse it now rather than at read time.
        if not hmac.compare_digest(private.public_key().public_bytes_raw(), public_raw):
            raise malformed(f"{where}: 'public' does not belong to 'secret'")
    return _Ed25519Key(key_id, private, public)
