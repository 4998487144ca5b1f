"""Extensions with Settings for tests/test_extension_settings.py.

Each processor reports what it was configured with through its output, and
never a secret itself: a secret is shown as its sha256 (or whether it is set).
"""

from __future__ import annotations

import hashlib

import msgspec

import gotstate_persist as gp
from gotstate_persist import EventView


class KeeperSettings(msgspec.Struct, frozen=True):
    endpoint: str
    retries: int = 3
    api_token: gp.Secret = gp.Secret("")
    webhook_secret: gp.Secret = gp.Secret("")

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")


def _digest(secret: gp.Secret) -> str:
    return hashlib.sha256(secret.reveal().encode()).hexdigest()


class _Reporting:
    seen: msgspec.Struct | None = None

    def configure(self, settings: msgspec.Struct) -> None:
        self.seen = settings

    def process(self, event: EventView) -> EventView:
        seen = self.seen
        if seen is None:
            return EventView(event.name, metadata={"configured": False})
        metadata: dict[str, object] = {"configured": True, "type": type(seen).__name__}
        for field in type(seen).__struct_fields__:
            value = getattr(seen, field)
            if isinstance(value, gp.Secret):
                metadata[f"{field}_set"] = bool(value.reveal())
                metadata[f"{field}_sha256"] = _digest(value)
            else:
                metadata[field] = value
        return EventView(event.name, metadata=metadata)


class Keeper(_Reporting):
    name = "keeper"
    version = "1.0.0"
    category = "event_processing"
    Settings = KeeperSettings


class OtherSettings(msgspec.Struct, frozen=True):
    region: str = "eu"
    api_token: gp.Secret = gp.Secret("")


class Other(_Reporting):
    name = "other"
    version = "1.0.0"
    category = "event_processing"
    Settings = OtherSettings


class Bare:
    """No Settings: takes no settings, and no secret can be granted to it."""

    name = "bare"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event: EventView) -> EventView:
        return event


class Picky(_Reporting):
    """configure() refuses: activation fails with the start-refusal error."""

    name = "picky"
    version = "1.0.0"
    category = "event_processing"
    Settings = OtherSettings

    def configure(self, settings: msgspec.Struct) -> None:
        raise RuntimeError("I refuse these settings")
