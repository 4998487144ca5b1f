"""Extensions: gotstate's extension categories as persisted, versioned registrations.

A registration is a sealed record of its namespace (``store.extensions``);
activating it runs the pinned code inside a boundary: a worker process
(``worker``: contained, with resource limits) or the host's own threads
(``in-process``: guarded, a deadline and captured exceptions, no memory or
CPU limit). Every value an extension sees is a copy in a frozen view, and
every value it returns is validated before anything is applied. See
the README's "Extensions" section for the claims each isolation supports, and
``docs/writing-an-extension.md`` for authors.
"""

from __future__ import annotations

from ..formats.extension import ExtensionStats, ResourceLimits
from ._active import ActiveExtension
from ._bound import BoundMachine
from ._contrib import FormatSpec
from ._registration import Registration
from ._registry import ExtensionRegistry
from ._views import EventView, StateView, TransitionView

__all__ = [
    "ActiveExtension",
    "BoundMachine",
    "EventView",
    "ExtensionRegistry",
    "ExtensionStats",
    "FormatSpec",
    "Registration",
    "ResourceLimits",
    "StateView",
    "TransitionView",
]
