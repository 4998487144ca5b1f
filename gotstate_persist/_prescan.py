"""The pre-scans: proving encoded bytes are one value, nested no deeper than the limit.

msgspec refuses truncated input but stops runaway nesting only at a depth set by
the interpreter's recursion limit, after building everything above it. So every
load and every save first walks the raw bytes once, without recursion, to prove
the nesting depth and (for msgpack) every length prefix sane. These walks run on
every record in both directions, which is why they are written for speed and
kept apart from the codec that turns their verdict into a
:class:`~gotstate_persist.errors.FormatError` fit for the side that hit it.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["ScanError", "TooDeep", "scan_json", "scan_msgpack"]

# --------------------------------------------------------------------------
# Pre-scan failures. Internal to the package: decode and encode turn them into
# FormatErrors whose advice fits the side (load or save) that hit them.


class ScanError(Exception):
    """The bytes are not one well-formed value; ``problem`` says how."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class TooDeep(ScanError):
    """Container nesting exceeds the depth limit."""


class _Unbalanced(ScanError):
    """JSON brackets do not pair up (the JSON is invalid anyway)."""


# --------------------------------------------------------------------------
# msgpack pre-scan
#
# One table, built once, answers "what is an item starting with this byte?":
#   s > 0           a scalar whose whole encoding is s bytes (fixint, fixstr,
#                   nil, bools, floats, ints, fixext)
#   s == 0          0xc1, which the msgpack spec reserves ("never used")
#   -31 <= s <= -1  fixarray / fixmap holding (-1 - s) items (a map entry is
#                   two items: key and value)
#   s <= -100       a length or count follows in the next 1, 2 or 4 bytes
# Encoding all of that in one list lets the hot loop do a single lookup per
# item and branch on the sign.

_VAR8: Final = -100  # str8, bin8: 1-byte length, header 2
_EXT8: Final = -101  # ext8: 1-byte length + type byte, header 3
_VAR16: Final = -102  # str16, bin16: header 3
_EXT16: Final = -103  # ext16: header 4
_VAR32: Final = -104  # str32, bin32: header 5
_EXT32: Final = -105  # ext32: header 6
_ARRAY16: Final = -106
_MAP16: Final = -107  # odd codes are maps: the count is doubled
_ARRAY32: Final = -108
_MAP32: Final = -109


def _build_msgpack_table() -> list[int]:
    table = [0] * 256
    for b in range(0x00, 0x80):  # positive fixint
        table[b] = 1
    for b in range(0x80, 0x90):  # fixmap
        table[b] = -1 - 2 * (b & 0x0F)
    for b in range(0x90, 0xA0):  # fixarray
        table[b] = -1 - (b & 0x0F)
    for b in range(0xA0, 0xC0):  # fixstr
        table[b] = 1 + (b & 0x1F)
    for b in range(0xE0, 0x100):  # negative fixint
        table[b] = 1
    fixed = {
        0xC0: 1,  # nil
        0xC2: 1,  # false
        0xC3: 1,  # true
        0xCA: 5,  # float32
        0xCB: 9,  # float64
        0xCC: 2,  # uint8
        0xCD: 3,  # uint16
        0xCE: 5,  # uint32
        0xCF: 9,  # uint64
        0xD0: 2,  # int8
        0xD1: 3,  # int16
        0xD2: 5,  # int32
        0xD3: 9,  # int64
        0xD4: 3,  # fixext1 (type byte + 1)
        0xD5: 4,  # fixext2
        0xD6: 6,  # fixext4
        0xD7: 10,  # fixext8
        0xD8: 18,  # fixext16
    }
    special = {
        0xC4: _VAR8,
        0xD9: _VAR8,
        0xC7: _EXT8,
        0xC5: _VAR16,
        0xDA: _VAR16,
        0xC8: _EXT16,
        0xC6: _VAR32,
        0xDB: _VAR32,
        0xC9: _EXT32,
        0xDC: _ARRAY16,
        0xDE: _MAP16,
        0xDD: _ARRAY32,
        0xDF: _MAP32,
    }
    for b, size in fixed.items():
        table[b] = size
    for b, code in special.items():
        table[b] = code
    table[0xC1] = 0
    return table


_MP_TABLE: Final = _build_msgpack_table()
_U32: Final = struct.Struct(">I").unpack_from


def scan_msgpack(data: bytes, max_depth: int) -> None:
    """Prove ``data`` is exactly one msgpack value nested at most ``max_depth`` deep.

    Iterative, allocation-free apart from a stack of at most ``max_depth``
    ints, and never trusts a length prefix further than the bytes that are
    actually there. It is written for speed because it runs on every load and
    every save: one table lookup per item, scalars skipped two at a time, and
    no function calls except on the rare container and long-string paths.
    """
    n = len(data)
    if not n:
        raise ScanError("is empty")
    size = _MP_TABLE
    u32 = _U32
    pos = 0
    rem = 1  # items still due in the innermost open container (top level: 1)
    stack: list[int] = []  # ``rem`` of every enclosing container; depth == len
    push = stack.append
    pop = stack.pop
    s = 0
    try:
        while True:
            # Hot path: fixed-size scalars of the current container.
            while rem > 1:
                s = size[data[pos]]
                if s <= 0:
                    break
                pos += s
                s = size[data[pos]]
                if s <= 0:
                    rem -= 1
                    break
                pos += s
                rem -= 2
            else:
                if rem:
                    s = size[data[pos]]
                    if s > 0:
                        pos += s
                        rem = 0
                if not rem:
                    if not stack:
                        break
                    rem = pop()
                    continue
            # data[pos] starts a container, a length-prefixed item or 0xc1.
            rem -= 1
            if s > _VAR8:
                if not s:
                    raise ScanError(f"uses the reserved byte 0xc1 at offset {pos}")
                pos += 1
                if len(stack) >= max_depth:
                    raise TooDeep(f"is nested deeper than {max_depth} levels")
                if s != -1:
                    push(rem)
                    rem = -1 - s
            elif s >= _EXT32:
                start = pos
                if s == _VAR8:
                    pos += 2 + data[pos + 1]
                elif s == _EXT8:
                    pos += 3 + data[pos + 1]
                elif s == _VAR16:
                    pos += 3 + (data[pos + 1] << 8 | data[pos + 2])
                elif s == _EXT16:
                    pos += 4 + (data[pos + 1] << 8 | data[pos + 2])
                elif s == _VAR32:
                    pos += 5 + u32(data, pos + 1)[0]
                else:
                    pos += 6 + u32(data, pos + 1)[0]
                if pos > n:
                    raise ScanError(
                        f"has a length prefix at offset {start} that claims "
                        f"{pos - n} more bytes than the data holds"
                    )
            else:
                start = pos
                if s <= _ARRAY32:
                    count = u32(data, pos + 1)[0]
                    pos += 5
                else:
                    count = data[pos + 1] << 8 | data[pos + 2]
                    pos += 3
                if s & 1:  # map: key and value are two items
                    count *= 2
                # Every item takes at least one byte, so a count larger than
                # what is left is a lie; refuse it before looping over it.
                if count > n - pos:
                    raise ScanError(
                        f"has a container at offset {start} that claims more items "
                        "than the remaining bytes could hold"
                    )
                if len(stack) >= max_depth:
                    raise TooDeep(f"is nested deeper than {max_depth} levels")
                if count:
                    push(rem)
                    rem = count
    except (IndexError, struct.error):
        # A read ran past the end: an item's header or body is cut off.
        raise ScanError("is truncated (it ends in the middle of a value)") from None
    if pos > n:
        raise ScanError("is truncated (its last value runs past the end)")
    if pos < n:
        raise ScanError(f"has {n - pos} byte(s) of trailing data after the value")


# --------------------------------------------------------------------------
# JSON pre-scan
#
# Depth in JSON is bracket nesting outside string literals. Everything below
# is a C-speed bytes operation: no per-character Python code and no regex
# that could backtrack. (The textbook string regex ``"(?:[^"\\]|\\.)*"`` is
# quadratic on a run of escaped quotes with no closing quote: 20 KB of them
# take a second, a megabyte would take most of an hour.)

_JSON_KEEP: Final = b'"[]{}'
_JSON_DROP: Final = bytes(b for b in range(256) if b not in _JSON_KEEP)
_JSON_OPEN_CLOSE: Final = bytes.maketrans(b"{}", b"[]")


def _json_brackets(data: bytes) -> bytes:
    """Return the brackets of ``data`` that lie outside string literals."""
    if b"\\" in data:
        # In a valid document backslashes occur only inside strings and pair up
        # left to right, so deleting ``\\`` and then ``\"`` removes exactly the
        # escapes that could hide or fake a string delimiter.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Keep only quotes and brackets. An adjacent quote pair is either an empty
    # string or the end of one string touching the start of the next; either
    # way nothing outside strings lies between them, so dropping it in bulk is
    # safe and removes almost every string without a Python-level loop.
    kept = data.translate(None, _JSON_DROP).replace(b'""', b"")
    if b'"' in kept:
        # Strings that contain brackets remain: the pieces outside strings are
        # every other piece between quotes.
        kept = b"".join(kept.split(b'"')[::2])
    return kept.translate(_JSON_OPEN_CLOSE)


def scan_json(data: bytes, max_depth: int) -> None:
    """Refuse JSON whose brackets nest deeper than ``max_depth`` or do not pair up.

    Syntax, UTF-8 and everything else are msgspec's job; this only has to make
    sure msgspec never recurses past the limit.
    """
    brackets = _json_brackets(data)
    if len(brackets) <= max_depth:
        return  # too few brackets to reach the limit
    # Deleting every innermost "[]" pair peels one nesting level per pass, so a
    # document of depth d is empty after d passes, at C speed; typical records
    # are a few levels deep and finish in a few passes.
    for _ in range(max_depth):
        peeled = brackets.replace(b"[]", b"")
        if len(peeled) == len(brackets):
            break
        brackets = peeled
        if not brackets:
            return
    if b"[]" in brackets:
        raise TooDeep(f"is nested deeper than {max_depth} levels")
    # No pair is left but brackets remain, so they cannot balance: invalid
    # JSON whose unclosed openers could nest arbitrarily deep. Refuse it here
    # rather than let msgspec recurse into it.
    raise _Unbalanced("has brackets that do not pair up")
