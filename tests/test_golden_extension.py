"""The stored registration format, version 1, is frozen: these bytes must decode forever.

A change to ``RegistrationRecordV1``, ``ResourceLimits``, ``ExtensionStats`` or
``CodeLocation`` that alters these bytes is a new format version with an
upcaster (``formats/extension.py``), never an edit of version 1. Version 2
(settings and secret grants) is held by tests/test_golden_extension_v2.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gotstate_persist import FormatRegistry
from gotstate_persist.codec import MSGPACK
from gotstate_persist.formats.extension import (
    EXTENSION_KIND,
    CodeLocation,
    ExtensionStats,
    RegistrationRecord,
    RegistrationRecordV1,
    ResourceLimits,
)

GOLDEN = Path(__file__).parent / "fixtures" / "golden_extension_v1.msgpack"

RECORD = RegistrationRecordV1(
    name="throttle",
    category="event_processing",
    version="1.2.3",
    target="shipping_rules:Throttle",
    isolation="worker",
    limits=ResourceLimits(timeout_s=0.5, memory_bytes=512 << 20, rate_per_s=200.0),
    code_sha256="ab" * 32,
    files={"shipping_rules/__init__.py": "cd" * 32, "shipping_rules/throttle.py": "ef" * 32},
    interface=("process", "stop"),
    status="failed",
    reason="circuit opened after 5 consecutive failures (last: ExtensionTimeout)",
    changed_at=datetime(2026, 12, 3, 12, 30, 45, 123456, tzinfo=UTC),
    location=CodeLocation(
        kind="module",
        module="shipping_rules",
        path_entry="/srv/app/lib",
        file="/srv/app/lib/shipping_rules/__init__.py",
        attr="Throttle",
        root="/srv/app/lib",
        distribution="",
        target="shipping_rules:Throttle",
    ),
    requires=">=0.1,<1",
    states=(),
    stats=ExtensionStats(
        calls=10,
        ok=5,
        failures=5,
        timeouts=5,
        rejected={"rate": 1, "size": 0, "concurrency": 0, "invalid_output": 0},
        p50_ms=1.5,
        p99_ms=500.25,
        max_rss_bytes=50 << 20,
    ),
)


def _payload() -> bytes:
    return MSGPACK.encode((EXTENSION_KIND, 1, RECORD))


def test_version_1_bytes_are_frozen() -> None:
    # the fixture was written once from RECORD when the format was released
    assert _payload() == GOLDEN.read_bytes()


def test_version_1_decodes_through_the_registry() -> None:
    kind, version, body = msgspec.msgpack.decode(
        GOLDEN.read_bytes(), type=tuple[str, int, msgspec.Raw]
    )
    assert (kind, version) == ("gotstate.extension", 1)
    record_type = FormatRegistry().type_for(kind, version)
    assert record_type is RegistrationRecordV1
    assert msgspec.msgpack.decode(body, type=record_type) == RECORD


def test_version_1_reads_as_the_newest_version_without_settings() -> None:
    _kind, _version, body = msgspec.msgpack.decode(
        GOLDEN.read_bytes(), type=tuple[str, int, msgspec.Raw]
    )
    newest = FormatRegistry().decode_newest(
        EXTENSION_KIND, 1, lambda t: msgspec.msgpack.decode(body, type=t)
    )
    assert type(newest) is RegistrationRecord
    assert newest.secrets == () and newest.secret_fields == () and not newest.has_settings
    fields = RegistrationRecordV1.__struct_fields__
    assert {f: getattr(newest, f) for f in fields} == {f: getattr(RECORD, f) for f in fields}
