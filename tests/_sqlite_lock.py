"""Another connection holding a SQLite database's write lock, released once, from any thread.

Used to keep a store's write waiting (in SQLite's busy handler) for as long
as a test needs: while it waits, the test looks at what the event loop and
the store do.
"""

from __future__ import annotations

import sqlite3
import threading
from types import TracebackType

__all__ = ["WriteLock"]


class WriteLock:
    """``BEGIN IMMEDIATE`` on its own connection; :meth:`release` rolls it back (once)."""

    def __init__(self, sqlite_url: str) -> None:
        path = sqlite_url.removeprefix("sqlite:///")
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("BEGIN IMMEDIATE")
        self._guard = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._guard:
            if not self._released:
                self._released = True
                self._conn.execute("ROLLBACK")
                self._conn.close()

    def release_later(self, seconds: float) -> threading.Timer:
        """A safety net, so a test of a broken store fails instead of hanging."""
        timer = threading.Timer(seconds, self.release)
        timer.daemon = True
        timer.start()
        return timer

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
