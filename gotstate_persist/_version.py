"""The package version, in a module of its own so that any layer can read it.

``gotstate_persist.__version__`` re-exports it; the extension registry checks
an extension's ``requires`` against it without importing the package root
(which would be an import cycle).
"""

from __future__ import annotations

__all__ = ["VERSION"]

VERSION = "0.1.0"
