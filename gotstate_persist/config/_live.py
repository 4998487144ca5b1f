"""``gp.LiveConfig``: a configuration value that follows its newest version, safely.

The value is replaced whole (never mutated) and only by a version that
decodes as the current schema (every stored version passed validation when
it was written) and that every subscriber's ``prepare(new, old)`` accepted.
Subscribers run one after another on the follower thread; one that raises
is isolated (logged by type only, counted) and the others still run. The
follower reads through ``ConfigStore.watch``, so it sees every version in
order and never skips one it has not looked at.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from ..errors import PersistError

__all__ = ["LiveConfig"]

logger = logging.getLogger(__name__)

#: How long ``close`` waits for the follower thread.
_CLOSE_WAIT_S = 5.0


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


class _Source(Protocol):
    """What a live value reads (``ConfigStore``; a protocol, so no import cycle)."""

    def current(self, name: str) -> tuple[int, Any]: ...

    def get(self, name: str, *, version: int | None = None) -> Any: ...

    def watch(
        self, name: str, *, since: int = 0, timeout: float | None = None, poll_s: float = ...
    ) -> Iterator[_Versioned]: ...


@dataclass(frozen=True)
class _Subscriber:
    on_change: Callable[[Any, Any], object]
    prepare: Callable[[Any, Any], object] | None


class LiveConfig:
    """The newest valid version of one configuration (``cfg.live(name)``).

    ``value`` and ``version`` are read without locks (one reference swap).
    ``subscribe(on_change, prepare=None)``; ``close()`` (or use ``with``).
    Counters: ``errors`` (subscriber callbacks that raised), ``vetoes``
    (versions a ``prepare`` refused), ``skipped`` (versions that could not be
    decoded here, e.g. written by a newer schema).
    """

    def __init__(self, config: _Source, name: str, *, poll_s: float) -> None:
        self._config = config
        self._name = name
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []
        self._state: tuple[int, Any] = config.current(name)
        self._seen = self._state[0]  # the newest version offered (swapped or not)
        self.errors = 0
        self.vetoes = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._follow, name=f"gotstate-live-{name}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<LiveConfig {self._name!r} version {self._state[0]}>"

    @property
    def value(self) -> Any:
        """The current value: whole, validated, never mutated in place."""
        return self._state[1]

    @property
    def version(self) -> int:
        """The version ``value`` comes from."""
        return self._state[0]

    def subscribe(
        self,
        on_change: Callable[[Any, Any], object],
        *,
        prepare: Callable[[Any, Any], object] | None = None,
    ) -> Callable[[], None]:
        """Call ``on_change(new, old)`` after each swap; return a function that unsubscribes.

        ``prepare(new, old)`` runs before the swap: returning False or
        raising vetoes that version (the value stays; later versions are
        still offered).
        """
        subscriber = _Subscriber(on_change, prepare)
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def close(self) -> None:
        """Stop following (idempotent)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(_CLOSE_WAIT_S)

    def __enter__(self) -> LiveConfig:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The follower.

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                for ref in self._config.watch(
                    self._name, since=self._seen, timeout=self._poll_s, poll_s=self._poll_s
                ):
                    if self._stop.is_set():
                        return
                    self._offer(ref.version)
            except PersistError as exc:
                logger.warning(
                    "live configuration %r: could not read a new version (%s); retrying",
                    self._name,
                    type(exc).__name__,
                )
                self._stop.wait(self._poll_s)

    def _offer(self, version: int) -> None:
        if version <= self._seen:
            return
        self._seen = version
        old = self._state[1]
        try:
            new = self._config.get(self._name, version=version)
        except PersistError as exc:
            self.skipped += 1
            logger.warning(
                "live configuration %r: version %d skipped (%s)",
                self._name,
                version,
                type(exc).__name__,
            )
            return  # moved past it; the value stays
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            if subscriber.prepare is not None and not self._prepared(subscriber, new, old):
                self.vetoes += 1
                return
        self._state = (version, new)
        for subscriber in subscribers:
            try:
                subscriber.on_change(new, old)
            except Exception as exc:
                self.errors += 1
                logger.warning(
                    "live configuration %r: a subscriber raised %s (isolated)",
                    self._name,
                    type(exc).__name__,
                )

    def _prepared(self, subscriber: _Subscriber, new: Any, old: Any) -> bool:
        assert subscriber.prepare is not None
        try:
            return subscriber.prepare(new, old) is not False
        except Exception as exc:
            self.errors += 1
            logger.warning(
                "live configuration %r: a prepare() raised %s; the version is vetoed",
                self._name,
                type(exc).__name__,
            )
            return False
