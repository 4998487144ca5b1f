"""Where an extension call's time goes, for ``bench_extensions.py --profile``.

Kept apart from bench_extensions (which measures the figures and their
targets) because it answers the next question, once a target is missed:
cProfile of the missed figure, and a breakdown of one call into the steps the
host and the worker take, each timed on its own without a profiler (cProfile
inflates microsecond calls and cannot follow a call onto the guarded pool
thread or into the worker process):

* the value work: ``to_wire`` / ``from_wire`` (the exact-type tagged walk of
  ``formats._values``), the msgpack encode of the size check, a frame's
  encode, its pre-scan and decode (``_frames.decode_body``), ``check_output``;
* for scale, msgspec's own encode and typed decode of the same view (not
  exact: tuples come back lists, Decimals strings), i.e. C-level value work;
* the mechanism: a bare pool-thread hand-off (``SimpleQueue`` + ``Event``,
  as ``_guard`` does) and a socket round trip of the same frame bytes to a
  child process that only echoes them (as the worker's channel does).

The model adds the steps each isolation runs per call (read from
``ActiveExtension.call``, ``GuardedRunner.call`` and ``WorkerProcess.call``
plus the worker's serve loop) and prints the sum next to the measured figure.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

import gotstate_persist as gp
from gotstate_persist._prescan import scan_msgpack
from gotstate_persist.extensions._categories import check_output
from gotstate_persist.extensions._frames import FRAME_MAX_DEPTH, decode_body, encode_frame
from gotstate_persist.extensions._views import from_wire, to_wire

__all__ = ["breakdown", "hot_spots"]

Op = Callable[[], object]


#: Not what the wire may do (tuples come back lists, Decimals strings): what C-level
#: encoding and typed decoding of the same view costs, for scale.
_NATIVE_DECODER = msgspec.msgpack.Decoder(gp.EventView)
# A child that echoes length-prefixed frames on the socket whose fd is its argv[1].
_ECHO = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
def read(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit(0)
        buf += chunk
    return bytes(buf)
while True:
    head = read(4)
    sock.sendall(head + read(int.from_bytes(head, "big")))
"""


def hot_spots(title: str, op: Op, calls: int) -> None:
    """cProfile ``calls`` runs of ``op``; print the top functions by own and cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        op()
    profiler.disable()
    print(f"\ncProfile: {title} x{calls}")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(16)
        body = out.getvalue().split("ncalls", 1)[-1].rstrip()
        print(f"  by {order}:\n  ncalls" + body.replace("\n", "\n  "))


def _median_us(op: Op, repeat: int, rounds: int) -> float:
    per_round = []
    for _ in range(rounds):
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            op()
            samples.append(time.perf_counter() - started)
        per_round.append(statistics.median(samples))
    return statistics.median(per_round) * 1e6


class _HandOff:
    """One daemon thread serving jobs the way ``_guard`` does, with no extension work."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[threading.Event, list[object]] | None]
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            done, box = job
            box.append(None)
            done.set()

    def call(self) -> None:
        done, box = threading.Event(), list[object]()
        self.jobs.put((done, box))
        done.wait(10.0)

    def close(self) -> None:
        self.jobs.put(None)


class _Echo:
    """A child process echoing frames over a socketpair: the bare cost of the channel."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        self.child = subprocess.Popen(
            [sys.executable, "-I", "-c", _ECHO, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()

    def round_trip(self, frame: bytes) -> None:
        self.sock.sendall(frame)
        got, want = 0, len(frame)
        while got < want:
            chunk = self.sock.recv(want - got)
            if not chunk:
                raise SystemExit("the echo child closed its socket")
            got += len(chunk)

    def close(self) -> None:
        self.sock.close()
        self.child.wait(10.0)


def breakdown(
    views: Sequence[tuple[str, gp.EventView]], measured: dict[str, tuple[float, float]]
) -> None:
    """Time each step of a call for every view; model both isolations against ``measured``.

    ``measured`` maps a view's label to its (guarded, worker) microseconds per call.
    """
    hand_off, echo = _HandOff(), _Echo()
    try:
        for label, view in views:
            small = len(view.metadata) < 100
            repeat, rounds = (200, 9) if small else (5, 5)
            steps, body_bytes = _steps(view, hand_off, echo)
            took = {name: _median_us(op, repeat, rounds) for name, op in steps.items()}
            print(f"\nbreakdown, {label} ({body_bytes:,} B frame body): median us per step")
            for name, us in took.items():
                print(f"  {name:<38} {us:10.1f}")
            _model(label, took, measured.get(label))
    finally:
        hand_off.close()
        echo.close()


def _steps(view: gp.EventView, hand_off: _HandOff, echo: _Echo) -> tuple[dict[str, Op], int]:
    """Each step of a call on ``view``, as an op; and the size of its frame body."""
    wire = to_wire(view)
    frame = bytes(encode_frame(["call", "process", [wire]]))
    body = frame[4:]
    steps: dict[str, Op] = {
        "to_wire(view)": lambda: to_wire(view),
        "from_wire(wire)": lambda: from_wire(wire),
        "msgpack encode (size check)": lambda: msgspec.msgpack.encode(wire),
        "encode_frame": lambda: encode_frame(["call", "process", [wire]]),
        "decode_body (pre-scan + decode)": lambda: decode_body(body),
        "  of which scan_msgpack": lambda: scan_msgpack(body, FRAME_MAX_DEPTH),
        "check_output": lambda: check_output("process", view, max_events=64),
        "for scale: msgspec native round trip": lambda: _NATIVE_DECODER.decode(
            msgspec.msgpack.encode(view)
        ),
        "pool-thread hand-off, no work": hand_off.call,
        "socket round trip to an echo child": lambda: echo.round_trip(frame),
    }
    return steps, len(body)


def _model(label: str, took: dict[str, float], measured: tuple[float, float] | None) -> None:
    value = (
        2 * took["to_wire(view)"] + 2 * took["from_wire(wire)"] + took["check_output"]
    )  # args in, result out, each converted twice
    guarded = value + took["msgpack encode (size check)"] + took["pool-thread hand-off, no work"]
    host = (
        took["to_wire(view)"]
        + took["msgpack encode (size check)"]
        + took["encode_frame"]
        + took["decode_body (pre-scan + decode)"]
        + took["from_wire(wire)"]
        + took["check_output"]
    )
    worker_side = (
        took["decode_body (pre-scan + decode)"]
        + took["from_wire(wire)"]
        + took["to_wire(view)"]
        + took["encode_frame"]
    )
    worker = host + worker_side + took["socket round trip to an echo child"]
    shown: list[Any] = ["n/a", "n/a"] if measured is None else [f"{m:.1f}" for m in measured]
    print(
        f"  model {label}: guarded = 2 to_wire + 2 from_wire + check_output + size check + "
        f"hand-off = {guarded:.1f} us (measured {shown[0]}); value work alone {value:.1f} us"
    )
    print(
        f"  model {label}: worker = host {host:.1f} + worker {worker_side:.1f} + channel "
        f"{took['socket round trip to an echo child']:.1f} = {worker:.1f} us (measured {shown[1]})"
    )
