"""A payload handed over to sealing is freed while sealed, and a lost race seals it again.

``save_machine`` gives its payload up to the seal (``Encoded.handover``), so
AEAD sealing holds the payload and its ciphertext, then the ciphertext and
the blob, never all three (issue 16, peak memory of a save). The append
loop no longer has the payload after the first seal: when another writer
wins the version, the payload is taken back out of the blob it sealed.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

import gotstate_persist as gp
from gotstate_persist._envelope import seal, seal_handover
from gotstate_persist._keys import Handover
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.backends import open_backend
from gotstate_persist.formats import FormatRegistry
from gotstate_persist.sealing import open_envelope

ALGORITHMS = ("aes-256-gcm", "chacha20-poly1305", "hmac-sha256", "ed25519")
WHERE = {"namespace": "ns", "key": "k", "version": 1}


class Note(msgspec.Struct, frozen=True):
    text: str


def _formats() -> FormatRegistry:
    formats = FormatRegistry()
    formats.register(Note, kind="test.note", version=1)
    return formats


def _peak_of_seal(keyring: gp.KeyRing, size: int, handed_over: bool) -> tuple[int, bytes]:
    """Peak bytes traced while sealing a fresh ``size``-byte payload held only by the seal."""
    gc.collect()
    tracemalloc.start()
    try:
        payload = os.urandom(size)
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        if handed_over:
            handover = Handover(payload)
            del payload
            blob = seal_handover(keyring, handover, codec_id=1, **WHERE)  # type: ignore[arg-type]
        else:
            blob = seal(keyring, payload, codec_id=1, **WHERE)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, blob


@pytest.mark.parametrize("algorithm", ["aes-256-gcm", "chacha20-poly1305"])
def test_aead_sealing_frees_a_handed_over_payload_before_joining(algorithm: str) -> None:
    keyring = gp.KeyRing.generate(algorithm)
    size = 4_000_000
    kept_peak, _ = _peak_of_seal(keyring, size, handed_over=False)
    freed_peak, blob = _peak_of_seal(keyring, size, handed_over=True)
    # the caller's payload stays alive: ciphertext and blob on top of it
    assert kept_peak >= 1.9 * size
    # handed over: the ciphertext alone, then the blob (the payload was freed)
    assert freed_peak < 1.2 * size
    assert open_envelope(keyring, blob, **WHERE)[1] != b""  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_handed_over_payload_seals_to_what_seal_makes(algorithm: str) -> None:
    keyring = gp.KeyRing.generate(algorithm)
    payload = os.urandom(1000)
    handover = Handover(payload)
    assert len(handover) == 1000
    blob = seal_handover(keyring, handover, codec_id=1, **WHERE)  # type: ignore[arg-type]
    assert open_envelope(keyring, blob, **WHERE) == (1, payload)  # type: ignore[arg-type]
    assert len(handover) == 0  # given up: sealing kept no copy of it here


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_writer_that_loses_the_race_seals_its_payload_again(
    tmp_path: Path, algorithm: str
) -> None:
    keyring = gp.KeyRing.generate(algorithm)
    backend = open_backend(f"sqlite:///{tmp_path / 'race.db'}")
    try:
        rival = RecordPipeline(backend, keyring=keyring, namespace="ns", formats=_formats())
        won: list[gp.backends.VersionInfo] = []

        def clock() -> datetime:
            # runs between our seal and our write: the rival takes the version we sealed for
            if not won:
                won.append(rival.append("k", Note("rival")))
            return datetime.now(UTC)

        ours = RecordPipeline(
            backend, keyring=keyring, namespace="ns", formats=_formats(), clock=clock
        )
        info = ours.append("k", Note("mine"))
        assert won[0].version == 1 and info.version == 2
        assert ours.load("k")[1] == Note("mine")
        assert ours.load("k", 1)[1] == Note("rival")
        for version in (1, 2):  # each sealed for exactly the version it is stored under
            ours.verify(*ours.fetch("k", version))
    finally:
        backend.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_lost_race_during_a_key_rotation_still_saves(tmp_path: Path, algorithm: str) -> None:
    """The sealing key is rotated out and retired between our seal and our write.

    The payload is taken back out of our blob with the key that sealed it
    (the ring no longer holds it), then sealed again under the new primary.
    """
    keyring = gp.KeyRing.generate(algorithm)
    first_key = keyring.primary_id
    backend = open_backend(f"sqlite:///{tmp_path / 'rotation.db'}")
    try:
        rival = RecordPipeline(
            backend, keyring=gp.KeyRing.generate(algorithm), namespace="ns", formats=_formats()
        )
        raced: list[bool] = []

        def clock() -> datetime:
            if not raced:
                raced.append(True)
                rival.append("k", Note("rival"))
                keyring.rotate()
                keyring.retire(first_key)
            return datetime.now(UTC)

        ours = RecordPipeline(
            backend, keyring=keyring, namespace="ns", formats=_formats(), clock=clock
        )
        info = ours.append("k", Note("mine"))
        assert info.version == 2 and keyring.primary_id != first_key
        assert first_key not in keyring.key_ids
        assert ours.load("k", 2)[1] == Note("mine")
        assert sealing_key_of(ours, "k", 2) == keyring.primary_id
    finally:
        backend.close()


def sealing_key_of(pipeline: RecordPipeline, key: str, version: int) -> int:
    """The key id in the header of a stored version (its seal was checked by load)."""
    _info, blob = pipeline.fetch(key, version)
    return gp.sealing.read_header(blob).key_id
