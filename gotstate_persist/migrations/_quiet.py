"""Keep alembic's INFO lines out of the application's logs while we upgrade our schema.

A store creates or upgrades its own tables at first open; an application
that logs at INFO would otherwise see alembic's plugin set-up and "Running
upgrade" lines, about tables it never asked for, from code it does not run.
The application's logging is not reconfigured for that: no level, handler or
``propagate`` flag changes. A filter is attached to alembic's loggers for the
length of our upgrade and drops, from the thread running it only, records
below WARNING; an application running its own alembic migrations in another
thread meanwhile still logs them, and alembic's warnings always get through.
(Our ``env.py`` never calls ``fileConfig``, so alembic configures nothing.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_alembic"]

#: Loggers alembic logs on while upgrading, created here before alembic is
#: imported so that its import-time lines are filtered too.
_ALEMBIC_LOGGERS = ("alembic", "alembic.runtime.migration", "alembic.runtime.plugins")


class _QuietThread(logging.Filter):
    """Drop records below WARNING logged by one thread (all threads if none is recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return record.thread is not None and record.thread != self._thread


def _alembic_loggers() -> set[logging.Logger]:
    known = {logging.getLogger(name) for name in _ALEMBIC_LOGGERS}
    known.update(
        found
        for name, found in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("alembic.") and isinstance(found, logging.Logger)
    )
    return known


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Within the block, alembic's records below WARNING from this thread are dropped.

    alembic is imported here, under the filter (its import logs plugin set-up
    at INFO), so that every logger it creates is known before the block runs.
    """
    quiet = _QuietThread()
    loggers = _alembic_loggers()
    try:
        for found in loggers:
            found.addFilter(quiet)
        import alembic.command  # noqa: F401 - for its import-time lines and loggers

        for found in _alembic_loggers() - loggers:
            found.addFilter(quiet)
            loggers.add(found)
        yield
    finally:
        for found in loggers:
            found.removeFilter(quiet)
