"""Tests for the bounded codec layer.

The pre-scan is tested twice over: directly through ``Codec.check`` (so a
malformed input cannot pass just because msgspec happens to reject it later)
and through ``decode``/``encode``. Depth accounting is compared against a
plain recursive reference on generated data, for both wire formats.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import datetime
import math
import struct
import time
import traceback
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gotstate_persist.codec import (
    DEFAULT_LIMITS,
    JSON,
    MAX_BLOB_BYTES,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MSGPACK,
    Codec,
    Limits,
    codec_by_id,
    codec_by_name,
)
from gotstate_persist.errors import FormatError, InvalidArgument

CODECS = [MSGPACK, JSON]
each_codec = pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)

# Hostile inputs must be refused in milliseconds; the budget is generous so a
# slow CI machine does not flake, yet far below what a quadratic or
# per-claimed-item loop would need on a megabyte.
FAST = 2.0

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def json_like(*, with_bytes: bool = False, text: st.SearchStrategy[str] | None = None) -> Any:
    text = text if text is not None else st.text(max_size=20)
    scalars: st.SearchStrategy[Any] = st.none() | st.booleans() | INT64 | FLOATS | text
    if with_bytes:
        scalars = scalars | st.binary(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=25,
    )


def depth_of(value: Any) -> int:
    """Reference nesting depth: containers count, scalars are 0."""
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        children = list(value)
    else:
        return 0
    return 1 + max((depth_of(c) for c in children), default=0)


def nested_lists(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that also insists on identical types and dict order.

    ``==`` alone would accept ``True`` for ``1`` or ``1.0`` for ``1``.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def raw_encode(codec: Codec, value: Any) -> bytes:
    """Encode with msgspec directly, bypassing the codec's own save checks."""
    if codec is MSGPACK:
        return msgspec.msgpack.encode(value)
    return msgspec.json.encode(value)


def linked_exceptions(error: BaseException) -> list[BaseException]:
    """``error`` and every exception its ``__cause__``/``__context__`` chain reaches."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def carries(error: BaseException, canary: bytes) -> bool:
    """Whether the canary is anywhere an error handler could find it: the full
    traceback text, or the args and attributes of any linked exception (a
    ``UnicodeDecodeError`` keeps the undecodable input in ``object``)."""
    text = canary.decode("latin-1")
    if text in "".join(traceback.format_exception(error)):
        return True
    for linked in linked_exceptions(error):
        for name in dir(linked):
            if name.startswith("__"):
                continue
            value = getattr(linked, name, None)
            if isinstance(value, (bytes, bytearray, memoryview)) and canary in bytes(value):
                return True
            if text in repr(value):
                return True
    return False


def refused_quickly(call: Callable[[], object]) -> FormatError:
    start = time.perf_counter()
    with pytest.raises(FormatError) as info:
        call()
    assert time.perf_counter() - start < FAST
    return info.value


class Point(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    x: int
    tags: list[str] = []
    blob: bytes = b""


class Mode(msgspec.Struct):
    mode: Literal["on", "off"]


# ---------------------------------------------------------------- round trips


@each_codec
@settings(max_examples=300, deadline=None)
@given(value=json_like())
def test_round_trip_json_like_values(codec: Codec, value: Any) -> None:
    data = codec.encode(value)
    codec.check(data)
    assert same(codec.decode(data), value)


@settings(max_examples=200, deadline=None)
@given(value=json_like(with_bytes=True))
def test_msgpack_round_trips_bytes(value: Any) -> None:
    assert same(MSGPACK.decode(MSGPACK.encode(value)), value)


@each_codec
@settings(max_examples=200, deadline=None)
@given(
    point=st.builds(
        Point,
        name=st.text(max_size=20),
        x=INT64,
        tags=st.lists(st.text(max_size=5), max_size=4),
        blob=st.binary(max_size=20),
    )
)
def test_round_trip_struct(codec: Codec, point: Point) -> None:
    decoded = codec.decode(codec.encode(point), Point)
    assert type(decoded) is Point
    assert decoded == point


@each_codec
def test_raw_field_then_second_decode(codec: Codec) -> None:
    payload = codec.encode(("point", 3, Point(name="p", x=7, tags=["a"])))
    kind, version, body = codec.decode(payload, tuple[str, int, msgspec.Raw])
    assert (kind, version) == ("point", 3)
    assert isinstance(body, msgspec.Raw)
    assert codec.decode(body, Point) == Point(name="p", x=7, tags=["a"])


@each_codec
@pytest.mark.parametrize(
    "wrap", [bytes, bytearray, memoryview, msgspec.Raw], ids=lambda w: w.__name__
)
def test_decode_accepts_buffers(codec: Codec, wrap: Callable[[bytes], Any]) -> None:
    data = codec.encode({"a": [1, 2.5, None]})
    assert codec.decode(wrap(data)) == {"a": [1, 2.5, None]}


@each_codec
def test_decode_rejects_non_buffer(codec: Codec) -> None:
    with pytest.raises(InvalidArgument):
        codec.decode("[1]")  # type: ignore[call-overload]


def test_msgpack_64_bit_integer_range() -> None:
    for edge in (-(2**63), 2**64 - 1):
        assert MSGPACK.decode(MSGPACK.encode(edge)) == edge
    for outside in (-(2**63) - 1, 2**64):
        with pytest.raises(FormatError, match="outside the 64-bit range"):
            MSGPACK.encode(outside)


# ---------------------------------------------------------------------- depth


@each_codec
@pytest.mark.parametrize("build", [nested_lists, nested_dicts], ids=["lists", "dicts"])
def test_depth_limit_is_inclusive(codec: Codec, build: Callable[[int], Any]) -> None:
    at_limit = build(MAX_DEPTH)
    assert codec.decode(raw_encode(codec, at_limit)) == at_limit
    assert codec.decode(codec.encode(at_limit)) == at_limit

    over = build(MAX_DEPTH + 1)
    with pytest.raises(FormatError, match="deeper than 64 levels; raise nothing"):
        codec.decode(raw_encode(codec, over))
    with pytest.raises(FormatError, match="deeper than 64 levels"):
        codec.check(raw_encode(codec, over))
    with pytest.raises(FormatError, match="cannot be saved"):
        codec.encode(over)


@each_codec
def test_empty_innermost_container_counts_as_a_level(codec: Codec) -> None:
    assert codec.decode(raw_encode(codec, nested_lists(MAX_DEPTH - 1, leaf=[]))) is not None
    with pytest.raises(FormatError):
        codec.decode(raw_encode(codec, nested_lists(MAX_DEPTH, leaf={})))
    with pytest.raises(FormatError):
        codec.encode(nested_lists(MAX_DEPTH, leaf=[]))


@each_codec
def test_lowered_depth_limit_applies(codec: Codec) -> None:
    limits = Limits(max_depth=5)
    codec.decode(raw_encode(codec, nested_lists(5)), limits=limits)
    codec.encode(nested_lists(5), limits=limits)
    with pytest.raises(FormatError, match=r"higher Limits.max_depth \(at most 64\)"):
        codec.decode(raw_encode(codec, nested_lists(6)), limits=limits)
    with pytest.raises(FormatError, match="deeper than 5 levels"):
        codec.encode(nested_lists(6), limits=limits)
    # Depth is the longest path, not the first one.
    deep_second = [[1], [[[[[[1]]]]]]]
    with pytest.raises(FormatError):
        codec.decode(raw_encode(codec, deep_second), limits=limits)


def test_msgpack_map_keys_count_towards_depth() -> None:
    # A map whose key is an array nested 64 deep is 65 levels.
    key = b"\x91" * MAX_DEPTH + b"\x00"
    with pytest.raises(FormatError, match="deeper than 64"):
        MSGPACK.check(b"\x81" + key + b"\x00")
    MSGPACK.check(b"\x81" + key[1:] + b"\x00")


@each_codec
@settings(max_examples=300, deadline=None)
@given(value=json_like(), max_depth=st.integers(min_value=1, max_value=6))
def test_depth_check_matches_reference(codec: Codec, value: Any, max_depth: int) -> None:
    limits = Limits(max_depth=max_depth)
    too_deep = depth_of(value) > max_depth
    data = raw_encode(codec, value)
    for action in (
        lambda: codec.check(data, limits=limits),
        lambda: codec.decode(data, limits=limits),
        lambda: codec.encode(value, limits=limits),
    ):
        if too_deep:
            with pytest.raises(FormatError):
                action()
        else:
            action()


# Strings full of brackets, quotes and backslashes: the JSON pre-scan must see
# only the brackets outside string literals.
TRICKY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\/ab\n'), max_size=12)


@settings(max_examples=400, deadline=None)
@given(value=json_like(text=TRICKY_TEXT), max_depth=st.integers(min_value=1, max_value=6))
def test_json_depth_ignores_brackets_inside_strings(value: Any, max_depth: int) -> None:
    data = msgspec.json.encode(value)
    if depth_of(value) > max_depth:
        with pytest.raises(FormatError):
            JSON.check(data, limits=Limits(max_depth=max_depth))
    else:
        assert same(JSON.decode(data, limits=Limits(max_depth=max_depth)), value)


def test_json_strings_do_not_hide_or_fake_nesting() -> None:
    inside_string = b'["' + b"[" * 1000 + b'", {"k": "' + b"}" * 500 + b'"}]'
    assert JSON.decode(inside_string)[0] == "[" * 1000
    escaped_quote = b'["\\"' + b"[" * 100 + b'", 1]'
    assert JSON.decode(escaped_quote) == ['"' + "[" * 100, 1]
    # An escaped backslash ends the string: the brackets after it are real.
    deep = b'["\\\\", ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"]"
    with pytest.raises(FormatError, match="deeper than 64"):
        JSON.check(deep)
    shallow = b'["\\\\", ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"]"
    JSON.decode(shallow)


# ------------------------------------------------------------------- limits


def test_limits_defaults_are_the_ceilings() -> None:
    assert dataclasses.astuple(DEFAULT_LIMITS) == (MAX_BLOB_BYTES, MAX_PAYLOAD_BYTES, MAX_DEPTH)
    assert (MAX_BLOB_BYTES, MAX_PAYLOAD_BYTES, MAX_DEPTH) == (16 << 20, 64 << 20, 64)
    assert Limits(max_blob_bytes=1, max_payload_bytes=1, max_depth=1).max_depth == 1


@pytest.mark.parametrize(
    ("field", "value", "range_text"),
    [
        ("max_depth", 65, "1 to 64"),
        ("max_depth", 0, "1 to 64"),
        ("max_depth", -1, "1 to 64"),
        ("max_depth", True, "1 to 64"),
        ("max_depth", 5.0, "1 to 64"),
        ("max_depth", "5", "1 to 64"),
        ("max_payload_bytes", MAX_PAYLOAD_BYTES + 1, f"1 to {MAX_PAYLOAD_BYTES}"),
        ("max_blob_bytes", MAX_BLOB_BYTES + 1, f"1 to {MAX_BLOB_BYTES}"),
        ("max_blob_bytes", 0, f"1 to {MAX_BLOB_BYTES}"),
    ],
)
def test_limits_only_go_down(field: str, value: object, range_text: str) -> None:
    with pytest.raises(InvalidArgument, match=range_text) as info:
        Limits(**{field: value})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_depth = 100  # type: ignore[misc]


@each_codec
def test_payload_size_is_checked_before_anything_else(codec: Codec) -> None:
    limits = Limits(max_payload_bytes=10)
    # Malformed *and* too big: the size is what gets reported.
    with pytest.raises(FormatError, match="11 bytes, over the 10-byte payload limit") as info:
        codec.check(b"\xc1" * 11, limits=limits)
    assert "at most 67108864" in str(info.value)
    with pytest.raises(FormatError, match="payload limit"):
        codec.decode(bytearray(b"\xc1" * 11), limits=limits)
    # A memoryview is measured in bytes, not in items.
    with pytest.raises(FormatError, match="120 bytes"):
        codec.decode(memoryview(array.array("I", [0] * 30)), limits=Limits(max_payload_bytes=100))
    exactly = raw_encode(codec, "x" * 5)
    assert len(exactly) <= 10
    assert codec.decode(exactly, limits=limits) == "x" * 5


@each_codec
def test_encode_refuses_what_load_would_refuse_by_size(codec: Codec) -> None:
    limits = Limits(max_payload_bytes=50)
    with pytest.raises(FormatError, match=r"cannot be saved.*payload limit"):
        codec.encode("x" * 100, limits=limits)
    assert codec.decode(codec.encode("x" * 10, limits=limits), limits=limits) == "x" * 10


# ------------------------------------------------------------ hostile inputs

MB = 1 << 20

# name -> (bytes, what the pre-scan must say). Matching the message proves the
# pre-scan refused the input, not msgspec further down.
HOSTILE_MSGPACK = {
    "1MB nested fixarray headers": (b"\x91" * MB, "deeper than 64"),
    "1MB nested array32 headers, count 1": (b"\xdd\x00\x00\x00\x01" * (MB // 5), "deeper than 64"),
    "1MB array32 headers with huge counts": (
        b"\xdd\xff\xff\xff\xff" * (MB // 5),
        "claims more items",
    ),
    "array32 of 2**32-1 items, 3 bytes": (b"\xdd\xff\xff\xff\xff\x01\x02\x03", "claims more items"),
    "array16 claiming more than remains": (b"\xdc\x00\x10" + b"\x01" * 15, "claims more items"),
    "map32 huge": (b"\xdf\xff\xff\xff\xff\x01\x02", "claims more items"),
    "map16 entries need two items each": (b"\xde\x00\x0a" + b"\x01" * 19, "claims more items"),
    "str32 claiming 4 GB": (b"\xdb\xff\xff\xff\xff" + b"abc", "length prefix"),
    "str8 claiming more than remains": (b"\xd9\x10abc", "length prefix"),
    "bin32 huge": (b"\xc6\xff\xff\xff\xff" + b"x", "length prefix"),
    "ext32 huge": (b"\xc9\xff\xff\xff\xff\x01x", "length prefix"),
    "reserved 0xc1": (b"\xc1", "reserved byte 0xc1"),
    "reserved 0xc1 inside an array": (b"\x92\x01\xc1", "reserved byte 0xc1"),
    "empty": (b"", "empty"),
    "trailing garbage": (b"\x92\x01\x02\x00", "trailing"),
    "two top-level values": (b"\x01\x02", "trailing"),
    "truncated float64": (b"\xcb\x00\x00", "truncated"),
    "truncated length field": (b"\xda\x00", "truncated"),
    "truncated fixarray": (b"\x93\x01\x02", "truncated"),
}


@pytest.mark.parametrize(("data", "says"), HOSTILE_MSGPACK.values(), ids=HOSTILE_MSGPACK.keys())
@pytest.mark.parametrize("entry", ["check", "decode", "decode_typed"])
def test_hostile_msgpack_is_refused_by_the_pre_scan(data: bytes, says: str, entry: str) -> None:
    if entry == "check":
        error = refused_quickly(lambda: MSGPACK.check(data))
    elif entry == "decode":
        error = refused_quickly(lambda: MSGPACK.decode(data))
    else:
        error = refused_quickly(lambda: MSGPACK.decode(data, list[int]))
    assert says in str(error)
    assert error.__cause__ is None  # refused before msgspec ran


@each_codec
def test_invalid_utf8_string_is_a_format_error_that_carries_none_of_it(codec: Codec) -> None:
    """What msgspec raises for it differs between its releases (a UnicodeDecodeError
    holding the string's bytes, later a DecodeError); ours is always a FormatError
    that says the record is damaged, and nothing linked to it holds the record."""
    text = b"hushhush-canary\xff\xfe"
    data = b"\x91" + bytes([0xA0 | len(text)]) + text if codec is MSGPACK else b'["' + text + b'"]'
    codec.check(data)  # structurally fine: UTF-8 is msgspec's job
    error = refused_quickly(lambda: codec.decode(data))
    assert f"record is not valid {codec.name}" in str(error)
    assert "damaged" in str(error)
    assert not carries(error, b"hushhush")


HOSTILE_JSON = {
    "1MB of [": b"[" * MB,
    "1MB of {": b'{"a":' * (MB // 5),
    "65 levels": b"[" * 65 + b"]" * 65,
    "unbalanced closers": b"]" * 100 + b"[" * 100,
    "invalid UTF-8": b'["\xff\xfe"]',
    "quadratic-regex bait": b'"' + b'\\"' * (MB // 2),
    "unterminated string of brackets": b'"' + b"[" * MB,
    "empty": b"",
    "trailing garbage": b"[1] x",
}


@pytest.mark.parametrize("data", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_json_is_refused(data: bytes) -> None:
    error = refused_quickly(lambda: JSON.decode(data))
    assert not isinstance(error.__cause__, (RecursionError, MemoryError))


def test_json_deep_input_is_stopped_before_msgspec() -> None:
    refused_quickly(lambda: JSON.check(b"[" * MB))
    refused_quickly(lambda: JSON.check(b"[" * 65 + b"]" * 65))


def _rich_msgpack() -> bytes:
    """One array holding every msgpack item kind, including non-minimal lengths."""
    items = [
        b"\x00",
        b"\xff",
        b"\xc0",
        b"\xc2",
        b"\xc3",
        b"\xcc\xff",
        b"\xcd\x01\x00",
        b"\xce\x00\x01\x00\x00",
        b"\xcf" + b"\x00" * 7 + b"\x01",
        b"\xd0\x80",
        b"\xd1\x80\x00",
        b"\xd2\x80\x00\x00\x00",
        b"\xd3\x80" + b"\x00" * 7,
        b"\xca" + struct.pack(">f", 1.5),
        b"\xcb" + struct.pack(">d", -2.25),
        b"\xa0",
        b"\xa3abc",
        b"\xd9\x02hi",
        b"\xda\x00\x02hi",
        b"\xdb\x00\x00\x00\x02hi",
        b"\xc4\x01\x00",
        b"\xc5\x00\x01\x00",
        b"\xc6\x00\x00\x00\x01\x00",
        b"\xd4\x01\x00",
        b"\xd5\x01" + b"\x00" * 2,
        b"\xd6\x01" + b"\x00" * 4,
        b"\xd7\x01" + b"\x00" * 8,
        b"\xd8\x01" + b"\x00" * 16,
        b"\xd6\xff\x00\x00\x00\x01",  # timestamp
        b"\xc7\x02\x01ab",
        b"\xc8\x00\x02\x01ab",
        b"\xc9\x00\x00\x00\x02\x01ab",
        b"\x90",
        b"\x80",
        b"\x92\x01\x02",
        b"\x81\xa1k\x01",
        b"\xdc\x00\x02\x01\x02",
        b"\xdd\x00\x00\x00\x01\x01",
        b"\xde\x00\x01\xa1k\x01",
        b"\xdf\x00\x00\x00\x01\xa1k\x91\x90",
        b"\x91\x91\x90",
    ]
    return b"\xdc" + len(items).to_bytes(2, "big") + b"".join(items)


def test_rich_msgpack_is_valid() -> None:
    data = _rich_msgpack()
    MSGPACK.check(data)
    decoded = MSGPACK.decode(data)
    assert decoded[28] == datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)
    assert decoded[-2] == {"k": [[]]}


def test_every_truncation_is_refused() -> None:
    data = _rich_msgpack()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            MSGPACK.check(data[:cut])
        with pytest.raises(FormatError):
            MSGPACK.decode(data[:cut])


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x91", b"\xdb\xff\xff\xff\xff"])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    with pytest.raises(FormatError, match="trailing"):
        MSGPACK.check(_rich_msgpack() + extra)


def _mutate(data: bytes, draw: Any) -> bytes:
    op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append"]))
    index = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
    byte = bytes([draw(st.integers(min_value=0, max_value=255))])
    if op == "replace" and data:
        return data[:index] + byte + data[index + 1 :]
    if op == "insert":
        return data[:index] + byte + data[index:]
    if op == "delete":
        return data[:index] + data[index + 1 :]
    if op == "truncate":
        return data[:index]
    return data + byte


def msgspec_finds_one_value(data: bytes) -> bool:
    """msgspec's own verdict on structure alone: decoding as ``msgspec.Raw`` skips
    the value without building it (no UTF-8 check, no hashing of keys), so it
    fails exactly on truncation, trailing bytes and reserved opcodes. Its
    exception type is all that is used, never its wording."""
    try:
        msgspec.msgpack.decode(data, type=msgspec.Raw)
    except msgspec.DecodeError:
        return False
    return True


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_like(with_bytes=True),
    max_depth=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_msgpack_pre_scan_agrees_with_msgspec(value: Any, max_depth: int, data: Any) -> None:
    """Differential test on mutated encodings: the pre-scan and msgspec agree
    about structure, and the pre-scan's depth equals the decoded depth."""
    mutated = _mutate(msgspec.msgpack.encode(value), data.draw)
    try:
        MSGPACK.check(mutated)  # one mutated byte cannot nest the value 64 deep
        structure_ok = True
    except FormatError:
        structure_ok = False
    assert structure_ok == msgspec_finds_one_value(mutated)
    limits = Limits(max_depth=max_depth)
    try:
        MSGPACK.check(mutated, limits=limits)
        scanned_ok = True
    except FormatError:
        scanned_ok = False
    try:
        decoded = msgspec.msgpack.decode(mutated)
    except Exception:  # invalid content (UTF-8, key types): its exception type varies by release
        pass
    else:
        assert scanned_ok == (depth_of(decoded) <= max_depth)
    # Whatever the bytes, decode answers with a value or a FormatError.
    with contextlib.suppress(FormatError):
        MSGPACK.decode(mutated, limits=limits)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_like(text=TRICKY_TEXT),
    max_depth=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_json_pre_scan_agrees_with_msgspec(value: Any, max_depth: int, data: Any) -> None:
    mutated = _mutate(msgspec.json.encode(value), data.draw)
    limits = Limits(max_depth=max_depth)
    try:
        JSON.check(mutated, limits=limits)
        scanned_ok = True
    except FormatError:
        scanned_ok = False
    try:
        decoded = msgspec.json.decode(mutated)
    except Exception:  # invalid JSON: what msgspec raises for it varies by release
        pass
    else:
        assert scanned_ok == (depth_of(decoded) <= max_depth)
    with contextlib.suppress(FormatError):
        JSON.decode(mutated, limits=limits)


# ------------------------------------------------------------ typed decoding


@each_codec
def test_unknown_field_is_rejected_without_naming_it(codec: Codec) -> None:
    data = raw_encode(codec, {"name": "a", "x": 1, "hushhush_field": 2})
    with pytest.raises(FormatError, match="does not match Point") as info:
        codec.decode(data, Point)
    assert "hushhush" not in str(info.value)
    assert info.value.__cause__ is None  # msgspec's text would name the field


@each_codec
def test_wrong_type_is_rejected_with_its_path_only(codec: Codec) -> None:
    data = raw_encode(codec, {"name": "a", "x": "hushhush"})
    with pytest.raises(FormatError, match=r"does not match Point at \$\.x") as info:
        codec.decode(data, Point)
    assert "hushhush" not in str(info.value)


@each_codec
def test_decoding_is_strict(codec: Codec) -> None:
    # Lax msgspec would turn "1" into 1; a record must not change type silently.
    with pytest.raises(FormatError):
        codec.decode(raw_encode(codec, {"name": "a", "x": "1"}), Point)
    with pytest.raises(FormatError):
        codec.decode(raw_encode(codec, "1"), int)


@each_codec
def test_invalid_literal_value_is_not_quoted(codec: Codec) -> None:
    with pytest.raises(FormatError) as info:
        codec.decode(raw_encode(codec, {"mode": "hushhush"}), Mode)
    assert "hushhush" not in str(info.value)
    assert info.value.__cause__ is None  # a traceback must not carry the plaintext value


@each_codec
def test_decoders_are_cached_per_type(codec: Codec) -> None:
    first = codec._decoder(tuple[str, int, msgspec.Raw])
    assert codec._decoder(tuple[str, int, msgspec.Raw]) is first
    assert codec._decoder(Point) is codec._decoder(Point)
    assert codec._decoder(Point) is not first


@each_codec
def test_unhashable_type_still_decodes(codec: Codec) -> None:
    unhashable = Annotated[int, {"note": ["not", "hashable"]}]
    assert codec.decode(raw_encode(codec, 5), unhashable) == 5
    with pytest.raises(FormatError):
        codec.decode(raw_encode(codec, "5"), unhashable)


@each_codec
def test_unsupported_decode_type_is_a_caller_error(codec: Codec) -> None:
    with pytest.raises(InvalidArgument):
        codec.decode(raw_encode(codec, 1), object())


# ----------------------------------------------------------------- encoding


class Opaque:
    pass


@each_codec
def test_unsupported_type_cannot_be_saved(codec: Codec) -> None:
    with pytest.raises(FormatError, match="contains an object of type Opaque"):
        codec.encode({"a": [Opaque()]})
    with pytest.raises(FormatError, match="contains an object of type Opaque"):
        codec.encode({Opaque(): 1})  # a dict key too


@each_codec
def test_very_deep_python_objects_cannot_be_saved(codec: Codec) -> None:
    with pytest.raises(FormatError, match="nested far deeper than the 64 levels"):
        codec.encode(nested_lists(100_000))
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(FormatError):
        codec.encode(cycle)


@each_codec
def test_encode_output_is_what_msgspec_writes(codec: Codec) -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert codec.encode(value) == raw_encode(codec, value)


# ---------------------------------------------------------------- registry


def test_codec_identities() -> None:
    assert (MSGPACK.id, MSGPACK.name) == (1, "msgpack")
    assert (JSON.id, JSON.name) == (2, "json")
    assert codec_by_name("msgpack") is MSGPACK
    assert codec_by_name("json") is JSON
    assert codec_by_id(1) is MSGPACK
    assert codec_by_id(2) is JSON


@pytest.mark.parametrize("name", ["pickle", "JSON ", "", 1])
def test_unknown_codec_name(name: Any) -> None:
    with pytest.raises(InvalidArgument) as info:
        codec_by_name(name)
    assert '"msgpack"' in str(info.value)
    assert '"json"' in str(info.value)


@pytest.mark.parametrize("codec_id", [0, 3, 255, -1, True])
def test_unknown_codec_id(codec_id: int) -> None:
    with pytest.raises(FormatError, match="codec id"):
        codec_by_id(codec_id)
