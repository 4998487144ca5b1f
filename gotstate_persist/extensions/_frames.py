"""Length-prefixed msgpack frames between the host and an extension's worker process.

A worker's stdout and stderr belong to the extension (its prints, its
tracebacks), so the request/response protocol runs on a socket of its own:
every frame is a 4-byte big-endian body length followed by one msgpack value.
Nothing an extension prints can corrupt it.

The host reads frames from a process that an extension controls, so every
read here is bounded before any work is done: the announced length is
compared with the caller's limit before a single body byte is read (a frame
announcing 4 GiB costs four bytes), every read has a deadline, and the body's
nesting is proved by the codec's own non-recursive pre-scan before msgspec
builds anything.

Why not ``codec.MSGPACK.decode``: its ``Limits`` cap depth at 64, the
ceiling of the stored formats, and a legitimate view nested
``MAX_VIEW_DEPTH`` (64) deep already takes 64 levels in its tagged form, to
which the wire form and the frame add a few. :data:`FRAME_MAX_DEPTH` is that
exact sum, checked by the same pre-scan (``_prescan.scan_msgpack``).

What the bounds do not cap: decoding builds one Python object per msgpack
item, so a body of N bytes of empty arrays becomes N empty lists, about 70
bytes of host memory per byte read. A response can therefore cost the host,
briefly, up to ~70 times ``max_output_bytes``: the same factor the stored
formats accept for ``MAX_PAYLOAD_BYTES``. Keep ``max_output_bytes`` at what
the extension needs.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Final

import msgspec

from .._prescan import ScanError, scan_msgpack
from ._views import MAX_VIEW_DEPTH

__all__ = [
    "FRAME_MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "FrameClosed",
    "FrameError",
    "FrameMalformed",
    "FrameTimeout",
    "FrameTooLarge",
    "body_size",
    "decode_body",
    "decode_trusted_body",
    "encode_frame",
    "read_body",
    "send_frame",
]

_HEADER: Final = struct.Struct(">I")
#: The largest body a 4-byte length can announce.
MAX_FRAME_BYTES: Final = (1 << 32) - 1
#: Nesting a frame may hold: a value nested MAX_VIEW_DEPTH deep (tagged form),
#: inside an event's metadata (2 levels: the event, the list of events), inside
#: a view list (1), inside the argument list (1), inside the request (1).
FRAME_MAX_DEPTH: Final = MAX_VIEW_DEPTH + 5
#: Reads and writes move at most this much per system call.
_CHUNK: Final = 1 << 20
#: A deadline already past still gets one non-blocking attempt.
_MIN_WAIT_S: Final = 0.001

_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder()


class FrameError(Exception):
    """Internal: the frame channel failed; the caller maps it to an ExtensionError."""


class FrameTooLarge(FrameError):
    """A frame's announced body length is over the reader's limit (nothing more was read)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class FrameClosed(FrameError):
    """The other end closed the channel (the process exited, or closed its socket)."""


class FrameTimeout(FrameError):
    """The deadline passed before the frame was sent or fully read."""


class FrameMalformed(FrameError):
    """The body is not one msgpack value nested at most FRAME_MAX_DEPTH deep."""


def encode_frame(obj: object) -> bytearray:
    """Header and msgpack body of ``obj`` in one buffer (msgspec errors propagate)."""
    buffer = bytearray(_HEADER.size)
    _ENCODER.encode_into(obj, buffer, _HEADER.size)
    size = len(buffer) - _HEADER.size
    if size > MAX_FRAME_BYTES:
        raise FrameTooLarge(size, MAX_FRAME_BYTES)
    _HEADER.pack_into(buffer, 0, size)
    return buffer


def body_size(frame: bytearray) -> int:
    """The body length of a frame built by :func:`encode_frame`."""
    return len(frame) - _HEADER.size


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), _MIN_WAIT_S)


def send_frame(sock: socket.socket, frame: bytearray, deadline: float | None) -> None:
    """Send a whole frame before ``deadline`` (``time.monotonic``; None waits forever)."""
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(frame)
    except TimeoutError:
        raise FrameTimeout("the frame could not be sent before the deadline") from None
    except OSError as exc:  # BrokenPipeError, ConnectionResetError, a closed socket
        raise FrameClosed(f"the channel is closed ({type(exc).__name__})") from None


def _read_exact(sock: socket.socket, size: int, deadline: float | None) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    try:
        while got < size:
            sock.settimeout(_remaining(deadline))
            n = sock.recv_into(view[got:], min(size - got, _CHUNK))
            if not n:
                raise FrameClosed("the channel was closed")
            got += n
    except TimeoutError:
        raise FrameTimeout("no complete frame before the deadline") from None
    except FrameClosed:
        raise
    except OSError as exc:
        raise FrameClosed(f"the channel is closed ({type(exc).__name__})") from None
    finally:
        view.release()
    return buffer


def read_body(sock: socket.socket, max_bytes: int, deadline: float | None) -> bytearray:
    """Read one frame's body, refusing it on its header alone when over ``max_bytes``."""
    (size,) = _HEADER.unpack(_read_exact(sock, _HEADER.size, deadline))
    if size > max_bytes:
        raise FrameTooLarge(size, max_bytes)
    return _read_exact(sock, size, deadline)


def decode_trusted_body(body: bytearray | bytes) -> Any:
    """Decode a body the host wrote (in the worker): no pre-scan, the host is trusted.

    The worker reads only frames its host wrote, so proving their depth
    first would only add the scan's cost to every call; malformed bytes are
    still ``FrameMalformed``.
    """
    try:
        return _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
        raise FrameMalformed(f"the frame is not valid msgpack ({type(exc).__name__})") from None


def decode_body(body: bytearray | bytes) -> Any:
    """Decode an untrusted body into plain builtins after proving its depth.

    The result holds only what msgpack carries (lists, dicts, str, bytes,
    numbers, None, and msgspec's ``Ext``/``datetime`` for extension types):
    the callers check its shape, and ``from_wire`` refuses anything else.
    """
    data = bytes(body)
    try:
        scan_msgpack(data, FRAME_MAX_DEPTH)
        return _DECODER.decode(data)
    except ScanError as exc:
        raise FrameMalformed(f"the frame {exc.problem}") from None
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
        raise FrameMalformed(f"the frame is not valid msgpack ({type(exc).__name__})") from None
