"""An extension whose import fails: a dependency that is not installed."""

import gotstate_persist_no_such_dependency  # noqa: F401


class Broken:
    pass
