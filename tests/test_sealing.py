"""Tests for gotstate_persist.sealing: the KeyRing and envelope v1.

The layout checks parse and verify blobs with struct/cryptography directly,
independently of the module under test, so a change that keeps round trips
working but moves a byte is still caught. The golden blobs in
fixtures/golden_envelopes pin envelope v1 for every release to come.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import pickle
import re
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from gotstate_persist import sealing
from gotstate_persist._wire import ALGORITHMS_BY_ID, ALGORITHMS_BY_NAME
from gotstate_persist.errors import FormatError, IntegrityError, InvalidArgument, PersistError
from gotstate_persist.sealing import (
    ALGORITHMS,
    DEFAULT_ENV_VAR,
    MAX_BLOB_BYTES,
    EnvelopeHeader,
    KeyRing,
    envelope_overhead,
    open_envelope,
    read_header,
    seal,
)

GOLDEN = Path(__file__).parent / "fixtures" / "golden_envelopes"

EXPECTED_IDS = {"aes-256-gcm": 1, "chacha20-poly1305": 2, "hmac-sha256": 3, "ed25519": 4}
EXPECTED_OVERHEAD = {"aes-256-gcm": 39, "chacha20-poly1305": 39, "hmac-sha256": 43, "ed25519": 75}
AEAD = ("aes-256-gcm", "chacha20-poly1305")
OPAQUE = (
    "blob failed authentication: it was altered, moved to another "
    "key/version/namespace, or sealed with a key this keyring does not hold"
)
CTX: dict[str, Any] = {"namespace": "orders", "key": "order-42", "version": 7}

# Generating keys is cheap but not free; hypothesis examples share one ring per algorithm.
RINGS = {algorithm: KeyRing.generate(algorithm) for algorithm in ALGORITHMS}

all_algorithms = pytest.mark.parametrize("algorithm", ALGORITHMS)


def _seal(
    ring: KeyRing,
    payload: bytes | bytearray | memoryview = b"payload",
    codec_id: int = 1,
    **ctx: Any,
) -> bytes:
    return seal(ring, payload, codec_id=codec_id, **{**CTX, **ctx})


def _open(ring: KeyRing, blob: bytes | memoryview, **ctx: Any) -> tuple[int, bytes]:
    return open_envelope(ring, blob, **{**CTX, **ctx})


def _secrets_of(ring: KeyRing) -> list[str]:
    """Every exported secret in base64, plus hex of the raw bytes."""
    found: list[str] = []
    for entry in json.loads(ring.export())["keys"]:
        if "secret" in entry:
            found.append(entry["secret"])
            found.append(base64.b64decode(entry["secret"]).hex())
    return found


def _context(namespace: str, key: str, version: int) -> bytes:
    """design.md's context, written out independently of the implementation."""
    ns, k = namespace.encode(), key.encode()
    return (
        b"gotstate-persist/v1\x00"
        + struct.pack(">I", len(ns))
        + ns
        + struct.pack(">I", len(k))
        + k
        + struct.pack(">Q", version)
    )


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _assert_no_secret(exc: BaseException, material: list[str]) -> None:
    for link in _exception_chain(exc):
        texts = [str(link), repr(link.args)]
        texts += [repr(getattr(link, attr, "")) for attr in ("doc", "object")]
        for secret in material:
            for text in texts:
                assert secret not in text


# ---------------------------------------------------------------- round trip


@all_algorithms
@settings(deadline=None)
@given(
    payload=st.binary(max_size=4096),
    namespace=st.text(max_size=40),
    key=st.text(max_size=40),
    version=st.integers(min_value=1, max_value=2**63 - 1),
    codec_id=st.integers(min_value=1, max_value=255),
)
def test_round_trip(
    algorithm: str, payload: bytes, namespace: str, key: str, version: int, codec_id: int
) -> None:
    ring = RINGS[algorithm]
    blob = seal(ring, payload, codec_id=codec_id, namespace=namespace, key=key, version=version)
    assert len(blob) == len(payload) + EXPECTED_OVERHEAD[algorithm]
    opened = open_envelope(ring, blob, namespace=namespace, key=key, version=version)
    assert opened == (codec_id, payload)
    assert type(opened[1]) is bytes


@all_algorithms
def test_envelope_overhead(algorithm: str) -> None:
    assert envelope_overhead(algorithm) == EXPECTED_OVERHEAD[algorithm]
    assert len(_seal(RINGS[algorithm], b"")) == EXPECTED_OVERHEAD[algorithm]


def test_envelope_overhead_unknown_algorithm() -> None:
    with pytest.raises(InvalidArgument):
        envelope_overhead("aes-128-cbc")


@all_algorithms
def test_accepts_bytearray_and_memoryview(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring, bytearray(b"abc"))
    assert _open(ring, blob) == (1, b"abc")
    blob = _seal(ring, memoryview(b"xxabcxx")[2:5])
    buffer = bytearray(b"junk" + blob + b"junk")
    assert _open(ring, memoryview(buffer)[4:-4]) == (1, b"abc")
    assert _open(ring, bytes(buffer[4:-4])) == (1, b"abc")


# ------------------------------------------------------------- byte layout


def test_each_algorithm_has_its_own_pinned_wire_id() -> None:
    # The ids are on disk in every header: they are written out per algorithm
    # and never follow the order of ALGORITHMS (the order the CLI offers them in).
    table = {name: ALGORITHMS_BY_NAME[name] for name in ALGORITHMS}
    assert {name: algorithm.wire_id for name, algorithm in table.items()} == EXPECTED_IDS
    assert {name: algorithm.overhead for name, algorithm in table.items()} == EXPECTED_OVERHEAD
    assert set(ALGORITHMS_BY_NAME) == set(EXPECTED_IDS)
    assert {i: a.name for i, a in ALGORITHMS_BY_ID.items()} == {
        i: name for name, i in EXPECTED_IDS.items()
    }
    for name, wire_id in EXPECTED_IDS.items():
        assert read_header(_seal(RINGS[name], b"")).algorithm_id == wire_id


@all_algorithms
def test_header_layout(algorithm: str) -> None:
    ring = RINGS[algorithm]
    payload = b"hello, layout"
    blob = _seal(ring, payload, codec_id=2)
    magic, envelope_version, algorithm_id, codec_id, key_id = struct.unpack(">4sBBBI", blob[:11])
    assert magic == b"GSPB"
    assert envelope_version == 1
    assert algorithm_id == EXPECTED_IDS[algorithm]
    assert codec_id == 2
    assert key_id == ring.primary_id
    assert blob[7:11] == ring.primary_id.to_bytes(4, "big")
    if algorithm in AEAD:
        assert len(blob) == 11 + 12 + len(payload) + 16
        assert payload not in blob
    else:
        tag = 32 if algorithm == "hmac-sha256" else 64
        assert len(blob) == 11 + len(payload) + tag
        assert blob[11 : 11 + len(payload)] == payload  # signed, not encrypted

    header = read_header(blob)
    assert header == EnvelopeHeader(1, EXPECTED_IDS[algorithm], 2, ring.primary_id)
    assert header.algorithm == algorithm
    assert read_header(memoryview(blob)) == header


@all_algorithms
def test_authenticator_matches_design_independently(algorithm: str) -> None:
    """Recompute the tag/MAC/signature with raw primitives and design.md's context."""
    ring = RINGS[algorithm]
    ctx: dict[str, Any] = {"namespace": "ns/ü", "key": "k\x00ey", "version": 2**40 + 1}
    payload = b"independent check"
    blob = _seal(ring, payload, **ctx)
    context = _context(ctx["namespace"], ctx["key"], ctx["version"])
    entry = json.loads(ring.export())["keys"][0]
    if algorithm in AEAD:
        secret = base64.b64decode(entry["secret"])
        cipher = AESGCM(secret) if algorithm == "aes-256-gcm" else ChaCha20Poly1305(secret)
        assert cipher.decrypt(blob[11:23], blob[23:], blob[:23] + context) == payload
    elif algorithm == "hmac-sha256":
        secret = base64.b64decode(entry["secret"])
        mac = hmac.new(secret, blob[:11] + context + payload, hashlib.sha256).digest()
        assert blob[-32:] == mac
    else:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public"]))
        public.verify(blob[-64:], blob[:11] + context + payload)  # raises if wrong


def test_reader_accepts_hand_built_aead_blob() -> None:
    ring = RINGS["aes-256-gcm"]
    secret = base64.b64decode(json.loads(ring.export())["keys"][0]["secret"])
    nonce = bytes(range(12))
    header = struct.pack(">4sBBBI", b"GSPB", 1, 1, 9, ring.primary_id) + nonce
    body = AESGCM(secret).encrypt(nonce, b"by hand", header + _context("orders", "order-42", 7))
    assert _open(ring, header + body) == (9, b"by hand")


@pytest.mark.parametrize("algorithm", AEAD)
def test_aead_nonces_are_fresh(algorithm: str) -> None:
    ring = RINGS[algorithm]
    nonces = {_seal(ring, b"same")[11:23] for _ in range(50)}
    assert len(nonces) == 50


# --------------------------------------------------------------- tampering


@all_algorithms
def test_every_bit_flip_is_rejected(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring, b"tiny")
    messages = set()
    for bit in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((IntegrityError, FormatError)) as caught:
            _open(ring, bytes(flipped))
        position = bit // 8
        if position <= 4:  # magic, envelope version: structurally not ours
            assert type(caught.value) is FormatError, position
        elif position == 5:  # algorithm id: unknown -> FormatError, another valid -> Integrity
            pass
        elif 7 <= position <= 10:  # key id: an unknown one is named, as the operator needs it
            assert type(caught.value) is IntegrityError, position
            assert str(caught.value).startswith("blob names key id 0x"), position
        else:
            assert type(caught.value) is IntegrityError, position
            messages.add(str(caught.value))
    assert messages == {OPAQUE}


@all_algorithms
def test_every_truncation_is_rejected(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring, b"tiny")
    for length in range(len(blob)):
        with pytest.raises((IntegrityError, FormatError)):
            _open(ring, blob[:length])


@all_algorithms
def test_appended_bytes_are_rejected(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring, b"tiny")
    with pytest.raises(IntegrityError):
        _open(ring, blob + b"\x00")


@all_algorithms
def test_crypto_exceptions_are_not_chained(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = bytearray(_seal(ring, b"tiny"))
    blob[-1] ^= 1
    with pytest.raises(IntegrityError) as caught:
        _open(ring, bytes(blob))
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@all_algorithms
@pytest.mark.parametrize(
    "moved",
    [
        {"namespace": "orders2"},
        {"namespace": "Orders"},
        {"key": "order-43"},
        {"key": "order-42 "},
        {"version": 8},
        {"version": 7 + 2**32},  # differs only above the low 32 bits
    ],
)
def test_moved_blob_is_rejected(algorithm: str, moved: dict[str, Any]) -> None:
    blob = _seal(RINGS[algorithm])
    with pytest.raises(IntegrityError, match=r"^blob failed authentication"):
        _open(RINGS[algorithm], blob, **moved)


@all_algorithms
def test_namespace_key_boundary_is_length_prefixed(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring, namespace="ab", key="c")
    with pytest.raises(IntegrityError):
        _open(ring, blob, namespace="a", key="bc")
    with pytest.raises(IntegrityError):
        _open(ring, blob, namespace="c", key="ab")


@all_algorithms
def test_wrong_keyring_is_rejected(algorithm: str) -> None:
    blob = _seal(RINGS[algorithm])
    with pytest.raises(IntegrityError):
        _open(KeyRing.generate(algorithm), blob)


@all_algorithms
def test_same_key_id_other_secret_is_rejected(algorithm: str) -> None:
    """Authentication is cryptographic, not a key-id lookup."""
    ring = RINGS[algorithm]
    impostor = json.loads(KeyRing.generate(algorithm).export())
    impostor["primary"] = ring.primary_id
    impostor["keys"][0]["id"] = ring.primary_id
    with pytest.raises(IntegrityError, match=r"^blob failed authentication"):
        _open(KeyRing.load(json.dumps(impostor)), _seal(ring))


@all_algorithms
def test_algorithm_swap_in_header_is_rejected(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = _seal(ring)
    for other in ALGORITHMS:
        if other == algorithm:
            continue
        swapped = bytearray(blob)
        swapped[5] = EXPECTED_IDS[other]
        with pytest.raises(IntegrityError):
            _open(ring, bytes(swapped))


def _forge_with_real_key(ring: KeyRing, claimed_id: int, payload: bytes) -> bytes:
    """A blob authentic under the ring's own key and algorithm, whose header claims another."""
    entry = json.loads(ring.export())["keys"][0]
    secret = base64.b64decode(entry["secret"])
    context = _context("orders", "order-42", 7)
    prefix = struct.pack(">4sBBBI", b"GSPB", 1, claimed_id, 1, ring.primary_id)
    if ring.algorithm in AEAD:
        nonce = bytes(12)
        cipher = AESGCM(secret) if ring.algorithm == "aes-256-gcm" else ChaCha20Poly1305(secret)
        return prefix + nonce + cipher.encrypt(nonce, payload, prefix + nonce + context)
    if ring.algorithm == "hmac-sha256":
        mac = hmac.new(secret, prefix + context + payload, hashlib.sha256).digest()
        return prefix + payload + mac
    private = Ed25519PrivateKey.from_private_bytes(secret)
    return prefix + payload + private.sign(prefix + context + payload)


@all_algorithms
def test_header_algorithm_must_match_key_even_with_valid_tag(algorithm: str) -> None:
    """The key decides the algorithm: a correctly authenticated header naming another is refused."""
    ring = RINGS[algorithm]
    payload = b"a payload longer than a nonce"
    honest = _forge_with_real_key(ring, EXPECTED_IDS[algorithm], payload)
    assert _open(ring, honest) == (1, payload)  # the forging helper itself is right
    for other in ALGORITHMS:
        if other != algorithm:
            with pytest.raises(IntegrityError):
                _open(ring, _forge_with_real_key(ring, EXPECTED_IDS[other], payload))


@all_algorithms
def test_unknown_key_id_is_rejected(algorithm: str) -> None:
    ring = RINGS[algorithm]
    blob = bytearray(_seal(ring))
    needed = (ring.primary_id % (2**32 - 1)) + 1
    blob[7:11] = needed.to_bytes(4, "big")
    with pytest.raises(IntegrityError) as caught:
        _open(ring, bytes(blob))
    # key ids are in the clear in every header: naming the one needed is no leak
    assert str(caught.value).startswith(f"blob names key id 0x{needed:08x}, which this keyring")
    assert f"0x{ring.primary_id:08x}" in str(caught.value)


# ------------------------------------------------------------ format errors


def _valid_blob() -> bytes:
    return _seal(RINGS["aes-256-gcm"])


@pytest.mark.parametrize("reader", ["open", "read_header"])
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"", "not a gotstate-persist blob"),
        (lambda b: b[:10], "not a gotstate-persist blob"),
        (lambda b: b[:20], "too short"),
        (lambda b: b"XSPB" + b[4:], "not a gotstate-persist blob"),
        (lambda b: b"\x00" * 64, "not a gotstate-persist blob"),
        (lambda b: b[:4] + b"\x02" + b[5:], "newer version"),
        (lambda b: b[:4] + b"\xff" + b[5:], "newer version"),
        (lambda b: b[:4] + b"\x00" + b[5:], "not a gotstate-persist blob"),
        (lambda b: b[:5] + b"\x05" + b[6:], "newer version"),
        (lambda b: b[:5] + b"\x00" + b[6:], "unknown algorithm id 0"),
        (lambda b: b + bytes(MAX_BLOB_BYTES), "limit"),
    ],
)
def test_format_errors(reader: str, mutate: Callable[[bytes], bytes], message: str) -> None:
    blob = mutate(_valid_blob())
    with pytest.raises(FormatError, match=message):
        if reader == "open":
            _open(RINGS["aes-256-gcm"], blob)
        else:
            read_header(blob)


def test_oversize_check_happens_before_authentication() -> None:
    blob = _valid_blob()
    at_limit = blob + bytes(MAX_BLOB_BYTES - len(blob))
    with pytest.raises(IntegrityError):  # at the limit: authenticated (and rejected)
        _open(RINGS["aes-256-gcm"], at_limit)
    with pytest.raises(FormatError):
        _open(RINGS["aes-256-gcm"], at_limit + b"\x00")


def test_seal_refuses_payload_over_blob_limit() -> None:
    ring = RINGS["aes-256-gcm"]
    largest = MAX_BLOB_BYTES - envelope_overhead("aes-256-gcm")
    blob = _seal(ring, bytes(largest))
    assert len(blob) == MAX_BLOB_BYTES
    assert _open(ring, blob) == (1, bytes(largest))
    with pytest.raises(FormatError, match="limit"):
        _seal(ring, bytes(largest + 1))


# ------------------------------------------------------- argument validation


@pytest.mark.parametrize("codec_id", [0, 256, -1, True, "1", 1.0, None])
def test_seal_rejects_bad_codec_id(codec_id: Any) -> None:
    with pytest.raises(InvalidArgument, match="codec_id"):
        _seal(RINGS["aes-256-gcm"], codec_id=codec_id)


@pytest.mark.parametrize(
    "bad",
    [
        {"version": 0},
        {"version": -1},
        {"version": 2**63},
        {"version": True},
        {"version": 1.0},
        {"version": "1"},
        {"namespace": b"orders"},
        {"namespace": None},
        {"key": 42},
        {"key": "\ud800"},
        {"namespace": "\udfff"},
    ],
)
def test_bad_context_is_invalid_argument(bad: dict[str, Any]) -> None:
    ring = RINGS["aes-256-gcm"]
    with pytest.raises(InvalidArgument):
        _seal(ring, **bad)
    with pytest.raises(InvalidArgument):
        _open(ring, _valid_blob(), **bad)


def test_version_bounds_are_inclusive() -> None:
    ring = RINGS["hmac-sha256"]
    for version in (1, 2**63 - 1):
        assert _open(ring, _seal(ring, version=version), version=version) == (1, b"payload")


def test_rejects_wrong_argument_types() -> None:
    ring = RINGS["aes-256-gcm"]
    with pytest.raises(InvalidArgument):
        _seal(ring, "text payload")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        _open(ring, "GSPB")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        seal("not a ring", b"x", codec_id=1, **CTX)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        open_envelope(None, _valid_blob(), **CTX)  # type: ignore[arg-type]


# ----------------------------------------------------------------- rotation


@all_algorithms
def test_rotation_keeps_old_blobs_readable_until_retired(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm)
    old_id = ring.primary_id
    old_blob = _seal(ring, b"old")
    new_id = ring.rotate()
    assert new_id != old_id
    assert ring.primary_id == new_id
    assert set(ring.key_ids) == {old_id, new_id}
    assert ring.algorithm == algorithm
    new_blob = _seal(ring, b"new")
    assert read_header(new_blob).key_id == new_id
    assert _open(ring, old_blob) == (1, b"old")

    with pytest.raises(InvalidArgument, match="rotate first"):
        ring.retire(new_id)
    ring.retire(old_id)
    assert ring.key_ids == (new_id,)
    with pytest.raises(IntegrityError):
        _open(ring, old_blob)
    assert _open(ring, new_blob) == (1, b"new")
    with pytest.raises(InvalidArgument, match="not in this keyring"):
        ring.retire(old_id)


def test_rotate_to_another_algorithm() -> None:
    ring = KeyRing.generate("hmac-sha256")
    old_blob = _seal(ring)
    ring.rotate("chacha20-poly1305")
    assert ring.algorithm == "chacha20-poly1305"
    assert read_header(_seal(ring)).algorithm == "chacha20-poly1305"
    assert _open(ring, old_blob) == (1, b"payload")
    ring.rotate()
    assert ring.algorithm == "chacha20-poly1305"
    with pytest.raises(InvalidArgument, match="aes-256-gcm"):
        ring.rotate("rot13")
    assert len(ring.key_ids) == 3


@pytest.mark.parametrize("key_id", [True, "1", None, 1.0])
def test_retire_rejects_non_int(key_id: Any) -> None:
    with pytest.raises(InvalidArgument):
        KeyRing.generate().retire(key_id)


def test_key_ids_are_nonzero_and_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0, 5, 0, 5, 5, 6, 2**32 - 1])
    fake = SimpleNamespace(randbits=lambda bits: next(draws), token_bytes=secrets.token_bytes)
    monkeypatch.setattr("gotstate_persist._keyring.secrets", fake)
    ring = KeyRing.generate()
    assert ring.primary_id == 5
    assert ring.rotate() == 6
    assert ring.rotate() == 2**32 - 1
    assert ring.key_ids == (5, 6, 2**32 - 1)


# -------------------------------------------------------------- verify-only


def test_public_ring_opens_but_cannot_seal() -> None:
    signer = KeyRing.generate("ed25519")
    old_blob = _seal(signer, b"old")
    signer.rotate()
    blob = _seal(signer, b"signed")
    verifier = signer.public()
    assert signer.can_seal
    assert not verifier.can_seal
    assert verifier.primary_id == signer.primary_id
    assert verifier.key_ids == signer.key_ids
    assert verifier.algorithm == "ed25519"
    assert "verify_only=True" in repr(verifier)
    assert _open(verifier, blob) == (1, b"signed")
    assert _open(verifier, old_blob) == (1, b"old")
    with pytest.raises(InvalidArgument, match="verify-only"):
        _seal(verifier)
    with pytest.raises(InvalidArgument, match="verify-only"):
        verifier.rotate()

    text = verifier.export()
    for secret in _secrets_of(signer):
        assert secret not in text
    assert all("secret" not in entry for entry in json.loads(text)["keys"])
    reloaded = KeyRing.load(text)
    assert not reloaded.can_seal
    assert _open(reloaded, blob) == (1, b"signed")
    with pytest.raises(InvalidArgument):
        _seal(reloaded)
    assert reloaded.public().export() == text


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "chacha20-poly1305", "hmac-sha256"])
def test_public_needs_ed25519(algorithm: str) -> None:
    with pytest.raises(InvalidArgument, match="ed25519"):
        KeyRing.generate(algorithm).public()


def test_public_of_mixed_ring_drops_symmetric_keys() -> None:
    ring = KeyRing.generate("hmac-sha256")
    hmac_id = ring.primary_id
    hmac_blob = _seal(ring)
    ring.rotate("ed25519")
    verifier = ring.public()
    assert verifier.key_ids == (ring.primary_id,)
    assert hmac_id not in verifier.key_ids
    with pytest.raises(IntegrityError):
        _open(verifier, hmac_blob)
    for secret in _secrets_of(ring):
        assert secret not in verifier.export()


# ----------------------------------------------------------- export / load


@all_algorithms
def test_export_load_round_trip(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm)
    old_blob = _seal(ring, b"old")
    ring.rotate()
    new_blob = _seal(ring, b"new")
    text = ring.export()

    document = json.loads(text)
    assert document["format"] == "gotstate-persist-keyring"
    assert document["version"] == 1
    assert document["primary"] == ring.primary_id
    assert [entry["id"] for entry in document["keys"]] == list(ring.key_ids)
    for entry in document["keys"]:
        assert entry["algorithm"] == algorithm
        assert len(base64.b64decode(entry["secret"])) == 32
        assert ("public" in entry) == (algorithm == "ed25519")

    for loaded in (KeyRing.load(text), KeyRing.load(text.encode())):
        assert loaded.primary_id == ring.primary_id
        assert loaded.key_ids == ring.key_ids
        assert loaded.algorithm == algorithm
        assert loaded.can_seal
        assert _open(loaded, old_blob) == (1, b"old")
        assert _open(loaded, new_blob) == (1, b"new")
        assert _open(ring, _seal(loaded, b"back")) == (1, b"back")
        assert loaded.export() == text


def _base_document(algorithm: str = "aes-256-gcm") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(BASE_RINGS[algorithm].export())
    return doc


BASE_RINGS = {algorithm: KeyRing.generate(algorithm) for algorithm in ALGORITHMS}
BASE_SECRETS = [secret for ring in BASE_RINGS.values() for secret in _secrets_of(ring)]


def _doc(change: Callable[[dict[str, Any]], object], algorithm: str = "aes-256-gcm") -> str:
    document = _base_document(algorithm)
    change(document)
    return json.dumps(document)


def _key(document: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = document["keys"][0]
    return key


def _other_secret() -> str:
    return _base_document("ed25519")["keys"][0]["secret"]  # type: ignore[no-any-return]


MALFORMED: dict[str, str | bytes] = {
    "empty": "",
    "not json": "gotstate",
    "truncated": BASE_RINGS["aes-256-gcm"].export()[:-2],
    "list": "[]",
    "null": "null",
    "number": "1",
    "not utf-8": b"\xff\xfe{}",
    "deep nesting": "[" * 100_000,
    "huge int": '{"version": ' + "1" * 5000 + "}",
    "format missing": _doc(lambda d: d.pop("format")),
    "format wrong": _doc(lambda d: d.update(format="fernet")),
    "version missing": _doc(lambda d: d.pop("version")),
    "version 2": _doc(lambda d: d.update(version=2)),
    "version str": _doc(lambda d: d.update(version="1")),
    "version bool": _doc(lambda d: d.update(version=True)),
    "primary missing": _doc(lambda d: d.pop("primary")),
    "primary unknown": _doc(lambda d: d.update(primary=_key(d)["id"] ^ 1)),
    "primary str": _doc(lambda d: d.update(primary=str(_key(d)["id"]))),
    "keys missing": _doc(lambda d: d.pop("keys")),
    "keys empty": _doc(lambda d: d.update(keys=[])),
    "keys object": _doc(lambda d: d.update(keys={})),
    "key not object": _doc(lambda d: d.update(keys=[1])),
    "unknown top field": _doc(lambda d: d.update(comment="x")),
    "unknown key field": _doc(lambda d: _key(d).update(note="x")),
    "id missing": _doc(lambda d: _key(d).pop("id")),
    "id zero": _doc(lambda d: (_key(d).update(id=0), d.update(primary=0))),
    "id negative": _doc(lambda d: (_key(d).update(id=-1), d.update(primary=-1))),
    "id 2**32": _doc(lambda d: (_key(d).update(id=2**32), d.update(primary=2**32))),
    "id bool": _doc(lambda d: (_key(d).update(id=True), d.update(primary=True))),
    "id float": _doc(lambda d: (_key(d).update(id=1.0), d.update(primary=1.0))),
    "id str": _doc(lambda d: _key(d).update(id="1")),
    "duplicate ids": _doc(lambda d: d["keys"].append(dict(_key(d)))),
    "algorithm missing": _doc(lambda d: _key(d).pop("algorithm")),
    "algorithm unknown": _doc(lambda d: _key(d).update(algorithm="aes-128-gcm")),
    "algorithm int": _doc(lambda d: _key(d).update(algorithm=1)),
    "secret missing": _doc(lambda d: _key(d).pop("secret")),
    "secret int": _doc(lambda d: _key(d).update(secret=1)),
    "secret not base64": _doc(lambda d: _key(d).update(secret="!" * 44)),
    "secret with whitespace": _doc(lambda d: _key(d).update(secret=" " + _key(d)["secret"])),
    "secret unpadded": _doc(lambda d: _key(d).update(secret=_key(d)["secret"].rstrip("="))),
    "secret non-canonical": _doc(lambda d: _key(d).update(secret=_key(d)["secret"][:42] + "B=")),
    "secret non-ascii": _doc(lambda d: _key(d).update(secret="é" + _key(d)["secret"][1:])),
    "secret surrogate": _doc(lambda d: _key(d).update(secret="\ud800" + _key(d)["secret"][1:])),
    "secret 31 bytes": _doc(lambda d: _key(d).update(secret=base64.b64encode(bytes(31)).decode())),
    "secret 33 bytes": _doc(lambda d: _key(d).update(secret=base64.b64encode(bytes(33)).decode())),
    "secret 64 bytes": _doc(lambda d: _key(d).update(secret=base64.b64encode(bytes(64)).decode())),
    "public on aes key": _doc(lambda d: _key(d).update(public=_key(d)["secret"])),
    "ed25519 public missing": _doc(lambda d: _key(d).pop("public"), "ed25519"),
    "ed25519 public 31 bytes": _doc(
        lambda d: _key(d).update(public=base64.b64encode(bytes(31)).decode()), "ed25519"
    ),
    "ed25519 public of another key": _doc(
        lambda d: _key(d).update(public=_base_document("hmac-sha256")["keys"][0]["secret"]),
        "ed25519",
    ),
    "ed25519 only the secret of another": _doc(
        lambda d: _key(d).update(secret=_base_document("aes-256-gcm")["keys"][0]["secret"]),
        "ed25519",
    ),
    "hmac with ed25519 public": _doc(
        lambda d: _key(d).update(public=_base_document("ed25519")["keys"][0]["public"]),
        "hmac-sha256",
    ),
    "duplicate field names": BASE_RINGS["aes-256-gcm"]
    .export()
    .replace('"version":1', '"version":1,"version":1'),
    "duplicate secret field": BASE_RINGS["aes-256-gcm"]
    .export()
    .replace('"secret":', '"secret":"AAAA","secret":'),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_keyring_is_invalid_argument(name: str) -> None:
    text = MALFORMED[name]
    with pytest.raises(InvalidArgument) as caught:
        KeyRing.load(text)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PersistError)
    _assert_no_secret(caught.value, BASE_SECRETS)


def test_malformed_corpus_mutates_a_valid_keyring() -> None:
    """Guards the corpus itself: its base documents must load."""
    for algorithm in ALGORITHMS:
        assert KeyRing.load(_doc(lambda d: None, algorithm)).primary_id == (
            BASE_RINGS[algorithm].primary_id
        )
    assert "duplicate field names" in MALFORMED
    assert MALFORMED["duplicate field names"] != BASE_RINGS["aes-256-gcm"].export()
    assert MALFORMED["duplicate secret field"] != BASE_RINGS["aes-256-gcm"].export()


def test_load_rejects_non_text() -> None:
    with pytest.raises(InvalidArgument):
        KeyRing.load(123)  # type: ignore[arg-type]


def test_newer_keyring_version_says_upgrade() -> None:
    with pytest.raises(InvalidArgument, match="upgrade"):
        KeyRing.load(_doc(lambda d: d.update(version=2)))


# ------------------------------------------------------- secrets stay secret


@all_algorithms
def test_repr_is_redacted(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm)
    ring.rotate()
    text = repr(ring)
    assert re.fullmatch(
        rf"KeyRing\(primary=0x{ring.primary_id:08x}, keys=2, algorithm='{algorithm}'\)", text
    )
    exported = json.loads(ring.export())
    material = _secrets_of(ring) + [e["public"] for e in exported["keys"] if "public" in e]
    internals = [repr(key) for key in ring._keys.values()]
    for secret in material:
        assert secret not in text
        assert secret not in str(ring)
        for internal in internals:
            assert secret not in internal
    for internal in internals:
        assert re.fullmatch(r"<_\w+Key id=0x[0-9a-f]{8} algorithm='[\w-]+'>", internal)


@all_algorithms
def test_keyring_cannot_be_pickled_or_copied(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm)
    with pytest.raises(TypeError, match="export"):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        copy.deepcopy(ring)


def test_keyring_equality_is_identity() -> None:
    ring = KeyRing.generate()
    twin = KeyRing.load(ring.export())
    assert ring == ring
    assert ring != twin
    assert len({ring, twin}) == 2


def test_keyring_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match="generate"):
        KeyRing()


def test_generate_rejects_unknown_algorithm() -> None:
    with pytest.raises(InvalidArgument) as caught:
        KeyRing.generate("des")
    for algorithm in ALGORITHMS:
        assert algorithm in str(caught.value)
    assert KeyRing.generate().algorithm == "aes-256-gcm"


@all_algorithms
def test_errors_never_contain_key_material(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm)
    material = _secrets_of(ring)
    blob = bytearray(_seal(ring))
    blob[-1] ^= 1
    failures: list[BaseException] = []
    for action in (
        lambda: _open(ring, bytes(blob)),
        lambda: _open(ring, bytes(blob), version=99),
        lambda: ring.retire(ring.primary_id),
        lambda: _seal(ring, codec_id=0),
        lambda: KeyRing.load(ring.export().replace('"version":1', '"version":"x"')),
        lambda: KeyRing.load(ring.export()[:-1]),
        lambda: KeyRing.load(ring.export().encode() + b"\xff"),
    ):
        with pytest.raises(PersistError) as caught:
            action()
        failures.append(caught.value)
    for failure in failures:
        _assert_no_secret(failure, material)


# ------------------------------------------------------------------ from_env


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.generate("chacha20-poly1305")
    blob = _seal(ring)
    monkeypatch.setenv(DEFAULT_ENV_VAR, ring.export())
    assert DEFAULT_ENV_VAR == "GOTSTATE_PERSIST_KEYS"
    assert _open(KeyRing.from_env(), blob) == (1, b"payload")
    monkeypatch.setenv("MY_KEYS", ring.export())
    assert KeyRing.from_env("MY_KEYS").primary_id == ring.primary_id


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_from_env_missing_says_how_to_create(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(DEFAULT_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(DEFAULT_ENV_VAR, value)
    with pytest.raises(InvalidArgument) as caught:
        KeyRing.from_env()
    assert "gotstate-persist keys generate" in str(caught.value)
    assert DEFAULT_ENV_VAR in str(caught.value)


def test_from_env_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.generate()
    monkeypatch.setenv(DEFAULT_ENV_VAR, ring.export()[:-1])
    with pytest.raises(InvalidArgument) as caught:
        KeyRing.from_env()
    _assert_no_secret(caught.value, _secrets_of(ring))


# -------------------------------------------------------------------- golden


def _manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((GOLDEN / "manifest.json").read_text("utf-8"))
    return manifest


def _golden_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = _manifest()["envelopes"]
    return entries


def test_golden_fixtures_cover_every_algorithm() -> None:
    assert {entry["algorithm"] for entry in _golden_entries()} == set(ALGORITHMS)


@pytest.mark.parametrize("entry", _golden_entries(), ids=lambda e: e["keyring"])
def test_golden_envelope_opens_forever(entry: dict[str, Any]) -> None:
    """Blobs sealed once by envelope v1 code; if this fails, stored data broke."""
    manifest = _manifest()
    ring = KeyRing.load((GOLDEN / entry["keyring"]).read_text("utf-8"))
    blob = (GOLDEN / entry["blob"]).read_bytes()
    ctx = {k: manifest[k] for k in ("namespace", "key", "version")}

    header = read_header(blob)
    assert header.envelope_version == manifest["envelope_version"] == 1
    assert header.algorithm == entry["algorithm"]
    assert header.key_id == entry["key_id"] == ring.primary_id
    codec_id, payload = open_envelope(ring, blob, **ctx)
    assert codec_id == manifest["codec_id"]
    assert payload == bytes.fromhex(manifest["payload_hex"])
    with pytest.raises(IntegrityError):
        open_envelope(ring, blob, **{**ctx, "version": ctx["version"] + 1})


def test_module_exports() -> None:
    assert set(sealing.__all__) == {
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
    }
    assert ALGORITHMS == ("aes-256-gcm", "chacha20-poly1305", "hmac-sha256", "ed25519")
    assert MAX_BLOB_BYTES == 16 * 1024 * 1024
