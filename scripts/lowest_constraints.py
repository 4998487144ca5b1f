"""Print a pip/uv constraints file pinning every direct dependency to its declared floor.

``make test-lowest`` installs with these constraints (and uv's
``--resolution lowest-direct``). The resolution option alone only *prefers* the
lowest versions: when the newest release of some indirect dependency needs a
higher version of a direct one (moto's joserfc needs a newer cryptography, say),
uv silently installs the higher one and the declared floor goes untested. Pinning
each floor exactly makes that case a resolution error instead, so a floor that
cannot be installed or does not pass the suite has to be raised.

Usage: python scripts/lowest_constraints.py PYPROJECT [EXTRA[,EXTRA...] ...]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# name, optional [extras], then the specifiers up to an environment marker
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")
_FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.+!-]*)")


def floors(pyproject: Path, extras: list[str]) -> dict[str, str]:
    """The ``>=`` floor of every dependency of the project and of the given extras."""
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no such extra: {', '.join(unknown)}")
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        requirements += optional[extra]
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: cannot parse the requirement {requirement!r}")
        name, specifiers = match.group(1), match.group(2)
        floor = _FLOOR.search(specifiers)
        if floor is None:
            raise SystemExit(
                f"{pyproject}: {requirement!r} declares no floor (>=); give it one, so that "
                "`make test-lowest` can test it"
            )
        found[re.sub(r"[-_.]+", "-", name).lower()] = floor.group(1)
    return found


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    extras = [extra for arg in argv[1:] for extra in arg.split(",") if extra]
    pinned = floors(Path(argv[0]), extras)
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
