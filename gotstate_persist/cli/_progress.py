"""Progress of the CLI's long runs (``copy``, ``migrate``, ``reseal``) on stderr.

On a terminal it is one live bar per task, drawn by ``rich`` (the library the
CLI's tables use too), so a long copy shows where it is without scrolling
the screen. Anywhere else (a log file, CI, a pipe) a redrawn bar would be
noise, so the display writes at most one line per :data:`SUMMARY_INTERVAL_S`
seconds while its tasks run and one summary line when it closes: a run of
any length, over any number of namespaces, leaves a few lines, not one per
record.

Labels may hold stored names (namespaces), which are escaped before they
reach the terminal and are never read as ``rich`` markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from .._names import printable

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

__all__ = ["SUMMARY_INTERVAL_S", "ProgressDisplay"]

#: Without a terminal, the least time between two progress lines of one task.
SUMMARY_INTERVAL_S = 30.0

#: How many task labels the closing summary line names.
_NAMED_TASKS = 3

#: ``progress(done, total)``, as ``copy_records``, ``Store.migrate`` and ``Store.reseal`` call it.
Progress = Callable[[int, int], None]


class _Lines:
    """Every task's progress as occasional plain lines (no terminal to redraw on).

    One clock for all tasks: a run over many namespaces writes no more lines
    than a run over one, and one summary line when it ends.
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float], interval_s: float) -> None:
        self._stream = stream
        self._clock = clock
        self._interval_s = interval_s
        self._started = self._last_line = clock()
        self._tasks: list[tuple[str, int, int]] = []  # label, done, total

    def task(self, label: str) -> Progress:
        index = len(self._tasks)
        self._tasks.append((label, 0, 0))

        def progress(done: int, total: int) -> None:
            self._tasks[index] = (label, done, total)
            now = self._clock()
            if now - self._last_line >= self._interval_s:
                self._last_line = now
                self._write(f"{label}: {done}/{total} so far")

        return progress

    def finish(self) -> None:
        if not self._tasks:
            return
        done = sum(task[1] for task in self._tasks)
        total = sum(task[2] for task in self._tasks)
        labels = [task[0] for task in self._tasks]
        if len(labels) == 1:
            label = labels[0]
        else:
            named = ", ".join(labels[:_NAMED_TASKS]) + (
                ", ..." if len(labels) > _NAMED_TASKS else ""
            )
            label = f"{len(labels)} runs ({named})"
        self._write(f"{label}: {done}/{total} in {self._clock() - self._started:.1f}s")
        self._tasks.clear()

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


class ProgressDisplay:
    """A context manager handing out ``progress(done, total)`` callbacks, one per task.

    ``live`` (default: whether ``stream`` is a terminal) picks the bar or the
    lines; ``clock`` and ``interval_s`` exist so tests need not sleep.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval_s: float = SUMMARY_INTERVAL_S,
    ) -> None:
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._clock = clock
        self._interval_s = interval_s
        self._bars: RichProgress | None = None
        self._lines = _Lines(stream, clock, interval_s)

    def __enter__(self) -> ProgressDisplay:
        if self._live:
            # imported here: only a terminal needs it, and it costs CLI start-up time
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bars = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self._stream, force_terminal=True),
            )
            self._bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        self._lines.finish()

    def task(self, label: str) -> Progress:
        """A new task labelled ``label``; call the result as ``progress(done, total)``."""
        label = printable(label)
        bars = self._bars
        if bars is None:
            return self._lines.task(label)
        task_id = bars.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bars.update(task_id, completed=done, total=total)

        return advance
