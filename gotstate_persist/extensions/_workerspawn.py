"""Starting one worker process, and everything the host holds for it until it is reaped.

One :class:`WorkerChild` is one process: its end of the protocol socket, the
lifeline pipe whose closing tells the worker the host is gone, its private
temporary working directory, and the thread that drains its output into an
:class:`OutputTail`. Policy (when to start, restart or kill, how to read a
death) belongs to ``_workerproc``; this module only does it, safely:

* the command is ``[*prefix, sys.executable, "-I", "-m", WORKER_MODULE,
  directory, fd, fd]`` with a scrubbed environment (:data:`WORKER_ENV` only: no
  ``GOTSTATE_PERSIST_KEYS``, no database URL, no credential, not even
  ``PATH``), stdin on ``/dev/null``, stdout and stderr into one pipe, and only
  the two protocol fds inherited;
* the worker leads a new session, so a kill reaches every process it started
  that stayed in its group (``os.killpg``);
* it is reaped with ``os.waitpid``; its peak RSS is the kernel's ``VmHWM``
  of its own address space, sampled while it lives (``ru_maxrss`` from
  ``wait4`` is no use: Linux carries the parent's high-water mark across
  fork and exec into it, so a large host would show as a large worker).

The scrub keeps secrets out of the worker's own environment, which is what
"contained" promises; it cannot hide the host from a process of the same
user: ``/proc/<host pid>/environ`` stays readable to the worker unless the
operator's sandbox prefix hides the host's processes (for example
``bwrap --unshare-pid --proc /proc``). Pass secrets to the host by file, not
environment, where that matters.

``-I`` ignores ``PYTHONPATH``: when this very package is not what an
isolated interpreter would import (tests run from a source tree with
``PYTHONPATH``; see :func:`isolated_python_finds_package` for how that is
decided without starting a process), the worker is started with ``-I -c`` and
a two-line bootstrap that puts this package's parent directory first on
``sys.path`` and runs the same module.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

from ..errors import ExtensionFailed
from ._frames import decode_body, read_body, send_frame
from ._protocol import PRIVATE_DIR_PREFIX

__all__ = [
    "TAIL_BYTES",
    "WORKER_ENV",
    "WORKER_MODULE",
    "OutputTail",
    "WorkerChild",
    "isolated_python_finds_package",
    "worker_command",
]

WORKER_MODULE: Final = "gotstate_persist.extensions._worker"
#: How much of a worker's output (stdout and stderr together) is kept.
TAIL_BYTES: Final = 64 * 1024
#: The whole environment of a worker: a UTF-8 locale, and at most two malloc
#: arenas (each arena reserves 64 MiB of address space, which RLIMIT_AS counts).
WORKER_ENV: Final = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "2"}
_PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent
_BOOTSTRAP: Final = (
    "import runpy, sys; sys.path.insert(0, sys.argv[1]); "
    f"runpy.run_module({WORKER_MODULE!r}, run_name='__main__', alter_sys=True)"
)
_READ_CHUNK: Final = 65536
#: Polling interval bounds while waiting for a worker to exit.
_POLL_FIRST_S: Final = 0.001
_POLL_MAX_S: Final = 0.02


def isolated_python_finds_package() -> bool:
    """Whether ``python -I`` would import this very ``gotstate_persist`` package.

    Decided without starting a process. An isolated interpreter's
    ``sys.path`` is the interpreter's own part of ours: the standard library,
    then site-packages and the entries their ``.pth`` files add. Everything
    that ``-I`` drops (``PYTHONPATH``, the script's directory, what pytest or
    a ``sys.path.insert`` prepended) sits before the standard library in
    ``sys.path``. So the entries from the standard library's on are searched
    with the import system's own ``PathFinder`` and the result compared with
    this package's ``__init__.py``. An editable install that works through an
    import hook instead of a path entry is not seen: the bootstrap is used
    then, which is as correct, only less tidy in ``ps``.
    """
    stdlib = os.path.dirname(os.__file__)
    try:
        start = sys.path.index(stdlib)
    except ValueError:
        return False
    spec = importlib.machinery.PathFinder.find_spec("gotstate_persist", sys.path[start:])
    if spec is None or spec.origin is None:
        return False
    return os.path.realpath(spec.origin) == os.path.realpath(_PACKAGE_DIR / "__init__.py")


@functools.cache
def worker_command() -> tuple[str, ...]:
    """The interpreter part of a worker's command line (computed once per process)."""
    if isolated_python_finds_package():
        return (sys.executable, "-I", "-m", WORKER_MODULE)
    return (sys.executable, "-I", "-c", _BOOTSTRAP, str(_PACKAGE_DIR.parent))


class OutputTail:
    """The last :data:`TAIL_BYTES` of what an extension's workers wrote (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = bytearray()

    def append(self, chunk: bytes) -> None:
        with self._lock:
            self._data += chunk
            excess = len(self._data) - TAIL_BYTES
            if excess > 0:
                del self._data[:excess]

    def text(self) -> str:
        with self._lock:
            data = bytes(self._data)
        return data.decode("utf-8", errors="replace")


def _drain(stream: Any, tail: OutputTail) -> None:
    fd = stream.fileno()
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            tail.append(chunk)
    except OSError:
        pass
    finally:
        stream.close()


def _resolve_prefix(prefix: tuple[str, ...], name: str) -> list[str]:
    if not prefix or os.path.isabs(prefix[0]):
        return list(prefix)
    found = shutil.which(prefix[0])
    if found is None:
        raise ExtensionFailed(
            f"extension {name!r}: the worker prefix command {prefix[0]!r} is not on PATH; "
            "install it or give its absolute path",
            cause="crashed",
        )
    return [found, *prefix[1:]]


class WorkerChild:
    """One started worker process and the host's resources for it."""

    def __init__(self, prefix: tuple[str, ...], tail: OutputTail, name: str) -> None:
        command = _resolve_prefix(prefix, name)
        self.directory = tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX)
        host_end, child_end = socket.socketpair()
        lifeline_read, lifeline_write = os.pipe()
        pass_fds = (child_end.fileno(), lifeline_read)
        try:
            self._popen = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [*command, *worker_command(), self.directory, *map(str, pass_fds)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=dict(WORKER_ENV),
                pass_fds=pass_fds,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            host_end.close()
            os.close(lifeline_write)
            shutil.rmtree(self.directory, ignore_errors=True)
            raise ExtensionFailed(
                f"extension {name!r}: its worker process could not be started "
                f"({type(exc).__name__}); check the interpreter and the worker prefix",
                cause="crashed",
            ) from exc
        finally:
            child_end.close()
            os.close(lifeline_read)
        self.pid = self._popen.pid
        self.sock = host_end
        self._lifeline = lifeline_write
        self._lock = threading.Lock()
        self._closed = False
        self.returncode: int | None = None
        self.rss_bytes: int | None = None
        threading.Thread(
            target=_drain,
            args=(self._popen.stdout, tail),
            name=f"gotstate-ext-output-{self.pid}",
            daemon=True,
        ).start()

    def send(self, frame: bytearray, deadline: float) -> None:
        send_frame(self.sock, frame, deadline)

    def receive(self, max_bytes: int, deadline: float) -> tuple[Any, int]:
        """One decoded frame and its body size (FrameError subclasses on failure)."""
        body = read_body(self.sock, max_bytes, deadline)
        return decode_body(body), len(body)

    def poll(self) -> int | None:
        """The exit status (negative: the signal) once the process has exited, else None."""
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere: nothing more to learn
                    pid, status = self.pid, 0
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                    self._popen.returncode = self.returncode  # no "still running" warning
            return self.returncode

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its status or None."""
        deadline = time.monotonic() + timeout
        pause = _POLL_FIRST_S
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX_S)
        return code

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group (a no-op once it is reaped)."""
        with self._lock:
            if self.returncode is not None:
                return  # its group id may belong to someone else by now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def live_peak_rss(self) -> int | None:
        """The process's peak RSS (``VmHWM``) as last seen alive; kept in ``rss_bytes``."""
        if self.returncode is None:
            try:
                with open(f"/proc/{self.pid}/status", encoding="ascii", errors="replace") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = int(line.split()[1]) * 1024
                            self.rss_bytes = max(self.rss_bytes or 0, peak)
                            break
            except (OSError, ValueError, IndexError):
                pass
        return self.rss_bytes

    def close(self, kill_wait: float) -> None:
        """Kill what is left of the worker's group, reap it, release everything (idempotent).

        Waits at most ``kill_wait`` seconds for the kernel to reap; a process
        that takes longer is reaped by a daemon thread.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.live_peak_rss()  # the last look at its peak, while it is still there
        self.signal_group(signal.SIGKILL)
        if self.wait(kill_wait) is None:
            threading.Thread(
                target=self.wait, args=(float("inf"),), name="gotstate-ext-reaper", daemon=True
            ).start()
        self.sock.close()
        os.close(self._lifeline)
        shutil.rmtree(self.directory, ignore_errors=True)
