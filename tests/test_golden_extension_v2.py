"""The stored registration format, version 2 (settings and secret grants), is frozen.

Version 2 is version 1 plus ``has_settings``, ``settings_fields``,
``secret_fields`` and ``secrets`` (``formats/extension.py``). These bytes
must decode forever; a change that alters them is a version 3 with an
upcaster, never an edit of version 2.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from gotstate_persist import FormatRegistry
from gotstate_persist.codec import MSGPACK
from gotstate_persist.formats.extension import (
    EXTENSION_FORMAT_VERSION,
    EXTENSION_KIND,
    RegistrationRecord,
)
from tests.test_golden_extension import RECORD as V1_RECORD

GOLDEN = Path(__file__).parent / "fixtures" / "golden_extension_v2.msgpack"

RECORD = RegistrationRecord(
    **{f: getattr(V1_RECORD, f) for f in V1_RECORD.__struct_fields__},
    has_settings=True,
    settings_fields=("api_token", "endpoint", "webhook_secret"),
    secret_fields=("api_token", "webhook_secret"),
    secrets=("api_token",),
)


def _payload() -> bytes:
    return MSGPACK.encode((EXTENSION_KIND, 2, RECORD))


def test_the_newest_version_is_2() -> None:
    assert EXTENSION_FORMAT_VERSION == 2
    assert FormatRegistry().newest_version(EXTENSION_KIND) == 2


def test_version_2_bytes_are_frozen() -> None:
    # the fixture was written once from RECORD when the format was released
    assert _payload() == GOLDEN.read_bytes()


def test_version_2_decodes_through_the_registry() -> None:
    kind, version, body = msgspec.msgpack.decode(
        GOLDEN.read_bytes(), type=tuple[str, int, msgspec.Raw]
    )
    assert (kind, version) == ("gotstate.extension", 2)
    record_type = FormatRegistry().type_for(kind, version)
    assert record_type is RegistrationRecord
    assert msgspec.msgpack.decode(body, type=record_type) == RECORD
