"""Extensions that attack their host: loaded by tests/test_extension_worker.py as file targets.

Plain classes, not an importable package: each test runs them in a worker process.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import stat
import struct
import sys
import time
from typing import Any

_LIMITS = {
    "as": resource.RLIMIT_AS,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
}
_FOREVER = 10**9


def _protocol_socket() -> int:
    """Find the worker's protocol socket, as a hostile extension would."""
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        fd = int(name)
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            continue
    raise RuntimeError("no socket")


def scan_for(needle_parts: tuple[str, str]) -> bool:
    """Whether any object the garbage collector tracks shows the needle in its repr."""
    needle = needle_parts[0] + needle_parts[1]
    found = False
    for obj in gc.get_objects():
        try:
            if needle in repr(obj):
                found = True
                break
        except Exception:  # some reprs fail; keep scanning
            continue
    return found


class Hostile:
    name = "hostile"
    version = "1.0.0"
    category = "event_processing"
    states = frozenset({"b", "a"})

    def echo(self, value: Any) -> Any:
        return value

    def pid(self) -> int:
        return os.getpid()

    def loop(self) -> None:
        while True:
            pass

    def sleep(self) -> None:
        time.sleep(_FOREVER)

    def memory_bomb(self) -> int:
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))

    def big(self, size: int) -> str:
        return "x" * size

    def deep(self, depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        return value

    def forge_header(self) -> None:
        os.write(_protocol_socket(), struct.pack(">I", 1 << 30))
        time.sleep(_FOREVER)

    def forge_deep(self) -> None:
        body = b"\x91" * 200 + b"\xc0"
        os.write(_protocol_socket(), struct.pack(">I", len(body)) + body)
        time.sleep(_FOREVER)

    def exit(self) -> None:
        sys.exit(0)

    def interrupt(self) -> None:
        raise KeyboardInterrupt

    def raise_value_error(self) -> None:
        raise ValueError("secret payload 1234")

    def os_exit(self) -> None:
        os._exit(3)

    def segfault(self) -> None:
        ctypes.string_at(0)

    def spam(self, lines: int) -> str:
        for i in range(lines):
            print(f"stdout spam line {i:08d} " + "." * 60)
            print(f"stderr spam line {i:08d} " + "." * 60, file=sys.stderr)
        print("spam-end")
        return "done"

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def host_objects(self, needle_parts: tuple[str, str]) -> bool:
        return scan_for(needle_parts)

    def burn(self) -> None:
        while True:
            pass

    def burn_for(self, seconds: float) -> float:
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass
        return time.process_time()

    def write_file(self, size: int) -> int:
        with open("big.bin", "wb") as handle:
            handle.write(b"\0" * size)
        return size

    def probe(self) -> dict[str, Any]:
        null = os.stat("/dev/null")
        stdin = os.fstat(0)
        return {
            "isolated": sys.flags.isolated,
            "cwd": os.getcwd(),
            "stdin_is_devnull": stat.S_ISCHR(stdin.st_mode) and stdin.st_rdev == null.st_rdev,
            "limits": {name: list(resource.getrlimit(which)) for name, which in _LIMITS.items()},
            "executable": sys.executable,
            "niceness": os.nice(0),
            "orig_argv": list(sys.orig_argv),
        }

    def rendezvous(self, directory: str, mine: str, theirs: str) -> str:
        """Announce ``mine``, then wait for ``theirs``: only concurrent calls can both finish."""
        with open(os.path.join(directory, mine), "w") as handle:
            handle.write("here")
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(directory, theirs)):
            if time.monotonic() > deadline:
                raise TimeoutError(theirs)
            time.sleep(0.01)
        return mine

    async def later(self, value: int) -> int:
        return value + 1


class StopRaises:
    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        raise ValueError("secret")


class StopHangs:
    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        time.sleep(_FOREVER)


NOT_A_CLASS = 42


class Sample:
    """A well-formed event processor for inspect_target."""

    name = "sample"
    version = "1.2.3"
    category = "event_processing"
    requires = ">=0.1"
    states = frozenset({"b", "a"})

    def process(self, event: Any, extra: int = 0, /, *rest: Any, flag: bool, **kw: Any) -> Any:
        return event

    @staticmethod
    def helper(a: int, b: int) -> int:
        return a + b

    @classmethod
    def build(cls, config: str) -> Sample:
        return cls()

    async def on_enter(self, view: Any) -> None:
        return None

    def _private(self) -> None:
        return None


class CrashOnInit:
    def __init__(self) -> None:
        os._exit(7)


class RaiseOnInit:
    def __init__(self) -> None:
        raise RuntimeError("secret")


class SlowInit:
    """Takes a second to instantiate: a start slower than the calls' timeout."""

    def __init__(self) -> None:
        time.sleep(1.0)

    def echo(self, value: Any) -> Any:
        return value
