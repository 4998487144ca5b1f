"""``python -m gotstate_persist.cli``: the ``gotstate-persist`` command without its script.

For an environment whose ``bin`` directory is not on ``PATH``, and for tests
that run the command as a fresh process.
"""

from __future__ import annotations

import sys

from ._main import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
