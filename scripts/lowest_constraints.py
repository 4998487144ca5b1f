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
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*)")
_FLOOR = re.compile(r">=\s*([0-9][0-9A-Za-z.+!-]*)")


def floors(pyproject: Path, extras: list[str]) -> dict[str, str]:
    """The ``>=`` floor of every dependency of the project and of the given extras.

    An extra may name another of the project's own (``gotstate-persist[ui]`` in
    ``test``): that extra's requirements count as given too.
    """
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    own_name = _normalized(project["name"])
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no such extra: {', '.join(unknown)}")
    requirements = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            match = _REQUIREMENT.match(requirement)
            if match is not None and _normalized(match.group(1)) == own_name:
                pending += [name.strip() for name in (match.group(2) or "").split(",")]
            else:
                requirements.append(requirement)
    found: dict[str, str] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: cannot parse the requirement {requirement!r}")
        name, specifiers = match.group(1), match.group(3)
        floor = _FLOOR.search(specifiers)
        if floor is None:
            raise SystemExit(
                f"{pyproject}: {requirement!r} declares no floor (>=); give it one, so that "
                "`make test-lowest` can test it"
            )
        found[_normalized(name)] = floor.group(1)
    return found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    extras = [extra for arg in argv[1:] for extra in arg.split(",") if extra]
    pinned = floors(Path(argv[0]), extras)
    sys.stdout.write("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
