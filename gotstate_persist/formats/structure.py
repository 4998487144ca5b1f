"""Structure migrations: restore snapshots of an older machine into a newer one.

A snapshot restores only into a machine with its structure fingerprint
(:func:`gotstate_persist.fingerprint`). When an application changes its
machine (adds, renames, moves or removes states) it registers how the old
structure maps onto the new one::

    formats.register_structure_migration(
        from_fingerprint=old_fp,          # gp.fingerprint(old machine), or the error's
        renames={"paid": "settled"},      # old state name -> new state name
        removed={"paused": "idle"},       # state that no longer exists -> where it goes
    )

Semantics (what a restore through a migration does, in memory only: the
stored snapshot is never rewritten):

* States are identified by name, as gotstate does (a machine's state names
  are unique, submachines' merged states included). ``renames`` maps an old
  name to its new name. A *move* (a new parent) needs no entry unless the
  state is also renamed: the new machine decides parents. States the new
  machine adds start with no data and no history.
* ``removed`` maps a state that no longer exists to where it goes, or to
  ``None`` (a set of names means ``None`` for each). Its data and the history
  kept for it (as a composite) are dropped. If it was the active state, the
  machine becomes active in its destination (which must be composite exactly
  when the removed state was); without a destination the restore fails rather
  than guess. A history entry that pointed at it points at the destination
  if that lies inside the same composite, and is dropped otherwise.
* A history entry whose state no longer lies inside its composite (a move
  out of it) is dropped: that composite is entered at its initial state next
  time, as if it had never been visited.
* After the mapping, every surviving state must exist in the target machine
  with the same composite-ness, else ``StructureMismatch`` names what remains
  different. Submachines follow the same mapping (their path too).
* Chains: ``to_fingerprint=`` (optional, ``gp.fingerprint(new machine)``)
  names the structure a migration leads to, so that migrations chain: with
  A -> B and B -> C registered, an A snapshot restores into C. A migration
  without ``to_fingerprint`` leads to whatever machine it fits, so it can only
  be the last step of a chain. The shortest chain wins; two different chains
  of the same length are refused as ambiguous rather than picked at random.

This module is pure (names only); :mod:`gotstate_persist.machine` applies the
result to a live machine, in two phases as every restore.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InvalidArgument, StructureMismatch
from .machine import Structure

__all__ = [
    "Migrated",
    "StructureMigration",
    "StructureMigrations",
    "apply_chain",
    "chain_text",
    "map_name",
]

_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
#: Chains kept per fingerprint while searching: two are enough to know a
#: shortest chain is ambiguous.
_KEEP_CHAINS = 2

Chain = tuple["StructureMigration", ...]


def _short(fp: str) -> str:
    return fp[: len("sha256:") + 12] + "..."


@dataclass(frozen=True)
class StructureMigration:
    """One registered mapping from the structure ``from_fingerprint`` to a newer one.

    ``renames`` maps old state names to new ones; ``removed`` maps states that
    no longer exist to where their activity goes (a state name of the newer
    machine) or ``None``. ``to_fingerprint`` is the fingerprint of the machine
    the migration leads to, or ``None`` (then it fits whatever machine it
    fits, as the last step of a chain). Both mappings are read-only.
    """

    from_fingerprint: str
    to_fingerprint: str | None
    renames: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    removed: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> str:
        """``from sha256:abc... to sha256:def...`` (short fingerprints)."""
        to = _short(self.to_fingerprint) if self.to_fingerprint else "any machine it fits"
        return f"from {_short(self.from_fingerprint)} to {to}"

    def name_of(self, name: str) -> str | None:
        """What ``name`` is called after this migration; ``None`` if it was removed."""
        if name in self.removed:
            return None
        return self.renames.get(name, name)


def _check_fingerprint(value: object, argument: str) -> str:
    if type(value) is not str or not _FINGERPRINT.fullmatch(value):
        raise InvalidArgument(
            f"{argument} must be a machine fingerprint ('sha256:' and 64 hex digits) as "
            f"gp.fingerprint(machine) or StructureMismatch.snapshot_fingerprint give it, "
            f"got {_brief(value)}"
        )
    return value


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_name(value: object, where: str) -> str:
    if type(value) is not str:
        raise InvalidArgument(
            f"{where} must be state names (str), got {type(value).__name__} {_brief(value)}"
        )
    return value


def _normalize_renames(renames: object) -> dict[str, str]:
    if renames is None:
        return {}
    if not isinstance(renames, Mapping):
        raise InvalidArgument(
            f"renames must be a dict of old state name -> new state name, got "
            f"{type(renames).__name__}"
        )
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for old, new in renames.items():
        _check_name(old, "renames keys")
        _check_name(new, "renames values")
        if new in seen:
            raise InvalidArgument(
                f"renames maps both {seen[new]!r} and {old!r} to {new!r}; a state name can "
                "belong to one state only"
            )
        seen[new] = old
        out[old] = new
    return out


def _normalize_removed(removed: object) -> dict[str, str | None]:
    if removed is None:
        return {}
    if isinstance(removed, Mapping):
        out: dict[str, str | None] = {}
        for old, destination in removed.items():
            _check_name(old, "removed keys")
            if destination is not None:
                _check_name(destination, "removed values (destinations)")
            out[old] = destination
        return out
    if isinstance(removed, (set, frozenset, list, tuple)):
        names: list[str] = [_check_name(name, "removed") for name in removed]
        if len(set(names)) != len(names):
            raise InvalidArgument("removed names a state more than once")
        return dict.fromkeys(names)
    raise InvalidArgument(
        "removed must be a dict of removed state name -> the state its activity goes to "
        f"(or None), or a set of removed state names; got {type(removed).__name__}"
    )


class StructureMigrations:
    """The structure migrations an application registered, and how to chain them.

    Thread-safe; each :class:`~gotstate_persist.FormatRegistry` owns one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # from_fingerprint -> to_fingerprint (None: open) -> migration
        self._edges: dict[str, dict[str | None, StructureMigration]] = {}

    def register(
        self,
        *,
        from_fingerprint: str,
        renames: Mapping[str, str] | None = None,
        removed: Mapping[str, str | None] | Iterable[str] | None = None,
        to_fingerprint: str | None = None,
    ) -> StructureMigration:
        """Register how snapshots of the structure ``from_fingerprint`` map onto a newer one.

        Registering the same migration again is a no-op; a different one for
        the same ``from_fingerprint`` and ``to_fingerprint`` is refused.
        """
        source = _check_fingerprint(from_fingerprint, "from_fingerprint")
        target = None
        if to_fingerprint is not None:
            target = _check_fingerprint(to_fingerprint, "to_fingerprint")
            if target == source:
                raise InvalidArgument(
                    "to_fingerprint equals from_fingerprint: a machine whose structure did "
                    "not change needs no structure migration"
                )
        renamed = _normalize_renames(renames)
        gone = _normalize_removed(removed)
        both = sorted(set(renamed) & set(gone))
        if both:
            raise InvalidArgument(
                f"state {both[0]!r} is both renamed and removed; a state is one or the other"
            )
        new_names = set(renamed.values())
        for old, destination in gone.items():
            if destination is None:
                continue
            if destination in gone:
                raise InvalidArgument(
                    f"removed state {old!r} goes to {destination!r}, which this migration "
                    "removes too; name a state of the new machine"
                )
            if destination in renamed and destination not in new_names:
                raise InvalidArgument(
                    f"removed state {old!r} goes to {destination!r}, which this migration "
                    f"renames to {renamed[destination]!r}; name the state as the new machine "
                    "calls it"
                )
        migration = StructureMigration(
            from_fingerprint=source,
            to_fingerprint=target,
            renames=MappingProxyType(renamed),
            removed=MappingProxyType(gone),
        )
        with self._lock:
            edges = self._edges.setdefault(source, {})
            existing = edges.get(target)
            if existing is not None:
                if existing == migration:
                    return existing
                raise InvalidArgument(
                    f"a different structure migration {existing.describe()} is already "
                    "registered; register each structure change once"
                )
            edges[target] = migration
        return migration

    def __iter__(self) -> Iterator[StructureMigration]:
        with self._lock:
            found = [m for edges in self._edges.values() for m in edges.values()]
        return iter(found)

    def __len__(self) -> int:
        with self._lock:
            return sum(map(len, self._edges.values()))

    def __repr__(self) -> str:
        return f"StructureMigrations({len(self)} registered)"

    def registered_from(self, fingerprint: str) -> list[StructureMigration]:
        """The migrations registered for snapshots of the structure ``fingerprint``."""
        with self._lock:
            return list(self._edges.get(fingerprint, {}).values())

    def plan(self, snapshot_fingerprint: str, target_fingerprint: str) -> list[Chain]:
        """Candidate chains from a snapshot's structure to the target's, best first.

        ``[()]`` if the two are equal; ``[]`` if no registered migration leads
        there. A chain of migrations with ``to_fingerprint`` that reaches the
        target is the only candidate (the shortest; two of the same length
        are refused with ``StructureMismatch``). Otherwise every chain ending
        in a migration without ``to_fingerprint`` is a candidate, shortest
        first: the caller keeps the shortest that fits the target machine.
        """
        if snapshot_fingerprint == target_fingerprint:
            return [()]
        with self._lock:
            edges = {source: dict(targets) for source, targets in self._edges.items()}
        # breadth-first over migrations with a known target: shortest chains
        best: dict[str, list[Chain]] = {snapshot_fingerprint: [()]}
        layer = [snapshot_fingerprint]
        while layer:
            reached: dict[str, list[Chain]] = {}
            for node in sorted(layer):
                known = edges.get(node, {})
                for to in sorted(t for t in known if t is not None):
                    if to in best:
                        continue  # a shorter chain (or a cycle) already reached it
                    chains = reached.setdefault(to, [])
                    for chain in best[node]:
                        if len(chains) < _KEEP_CHAINS:
                            chains.append((*chain, known[to]))
            best.update(reached)
            layer = list(reached)
        exact = best.get(target_fingerprint)
        if exact:
            if len(exact) > 1:
                raise StructureMismatch(
                    "structure migrations are ambiguous: two different chains of "
                    f"{len(exact[0])} migrations lead from {snapshot_fingerprint} to "
                    f"{target_fingerprint} ({chain_text(exact[0])}; {chain_text(exact[1])}). "
                    "Register only one way from the old structure to the new one.",
                    snapshot_fingerprint=snapshot_fingerprint,
                    machine_fingerprint=target_fingerprint,
                    differences=("ambiguous structure migrations",),
                )
            return [exact[0]]
        candidates: list[Chain] = []
        for node, chains in best.items():
            open_end = edges.get(node, {}).get(None)
            if open_end is not None:
                candidates.extend((*chain, open_end) for chain in chains)
        candidates.sort(key=lambda c: (len(c), [m.from_fingerprint for m in c]))
        return candidates


def chain_text(chain: Chain) -> str:
    """A chain in words, for error messages."""
    return " then ".join(m.describe() for m in chain) or "no migration"


def map_name(chain: Chain, name: str) -> str | None:
    """``name`` after every migration of ``chain``; ``None`` once removed."""
    current: str | None = name
    for migration in chain:
        if current is None:
            return None
        current = migration.name_of(current)
    return current


@dataclass
class Migrated:
    """One machine's snapshot fields after a chain, and what still does not fit."""

    current: str | None
    history: dict[str, str]
    data: dict[str, Any]
    differences: list[str]


def _parents(structure: Structure) -> dict[str, str | None]:
    names = structure.names
    return {
        name: (names[parent] if 0 <= parent < len(names) else None)
        for name, parent in zip(names, structure.parents, strict=False)
    }


def _inside(parents: Mapping[str, str | None], state: str, composite: str) -> bool:
    """Whether ``state`` is a strict descendant of ``composite``."""
    seen = 0
    parent = parents.get(state)
    while parent is not None and seen <= len(parents):
        if parent == composite:
            return True
        parent = parents.get(parent)
        seen += 1
    return False


def apply_chain(
    chain: Chain,
    *,
    structure: Structure,
    current: str | None,
    history: Mapping[str, str],
    data: Mapping[str, Any],
    target: Structure,
    complete: bool,
) -> Migrated:
    """Map one machine's snapshot fields through ``chain`` and check them against ``target``.

    ``structure`` is the snapshot's (old) structure, ``target`` the live
    machine's. ``complete`` says the old structure is the full structure the
    first migration was registered for (the top machine), so names a
    migration mentions but the structure lacks are typos to report; for a
    submachine the mapping covers the whole machine and mentions other names.
    Nothing here touches a machine.
    """
    differences: list[str] = []
    old_composite = dict(zip(structure.names, structure.composite, strict=False))
    # state identity: the snapshot's name -> its name now (absent once removed)
    alive = {name: name for name in structure.names}
    current_composite = old_composite.get(current) if current is not None else None
    active: str | None = current
    entries = dict(history)
    values = dict(data)
    for step, migration in enumerate(chain):
        renames, removed = migration.renames, migration.removed
        if complete and step == 0:
            unknown = sorted((set(renames) | set(removed)) - set(alive.values()))
            if unknown:
                differences.append(
                    f"the structure migration {migration.describe()} names "
                    f"{_names(unknown)}, not states of the snapshot's machine"
                )
        # survivors and their new names; two states must not end up with one name
        moved: dict[str, str] = {}
        claimed: dict[str, str] = {}
        for origin, name in alive.items():
            if name in removed:
                continue
            new = renames.get(name, name)
            if new in claimed:
                differences.append(
                    f"the structure migration {migration.describe()} gives states "
                    f"{claimed[new]!r} and {origin!r} of the snapshot the same name {new!r}"
                )
            claimed[new] = origin
            moved[origin] = new
        alive = moved
        if active is not None:
            if active in removed:
                destination = removed[active]
                if destination is None:
                    differences.append(
                        f"the active state {active!r} is removed by the structure migration "
                        f"{migration.describe()} without a destination; map it to the state "
                        f"the machine should be in: removed={{{active!r}: '<state>'}}"
                    )
                active = destination
            else:
                active = renames.get(active, active)
        mapped: dict[str, str] = {}
        for composite, state in entries.items():
            if composite in removed:
                continue  # the composite's history goes with it
            target_state = removed[state] if state in removed else renames.get(state, state)
            if target_state is not None:
                mapped[renames.get(composite, composite)] = target_state
        entries = mapped
        values = {
            renames.get(name, name): value for name, value in values.items() if name not in removed
        }

    live_composite = dict(zip(target.names, target.composite, strict=False))
    missing = [origin for origin, name in alive.items() if name not in live_composite]
    if missing:
        shown = [
            f"{origin!r} (as {alive[origin]!r})" if alive[origin] != origin else repr(origin)
            for origin in sorted(missing)
        ]
        differences.append(
            "states of the snapshot missing from the machine after the structure migration: "
            + _joined(shown)
            + " (rename or remove them in a migration)"
        )
    for origin, name in sorted(alive.items()):
        if name in live_composite and live_composite[name] != old_composite[origin]:
            differences.append(f"state {name!r} is composite in only one of them")
    if active is not None:
        if active not in live_composite:
            if active not in alive.values():  # else already reported as missing
                differences.append(
                    f"the active state goes to {active!r}, which the machine does not have"
                )
        elif current_composite is not None and live_composite[active] != current_composite:
            kind = "a composite" if live_composite[active] else "a simple"
            saved = "a composite" if current_composite else "a simple"
            differences.append(
                f"the active state {current!r} goes to {active!r}, which is {kind} state "
                f"while the saved one was {saved} state; name a state of the same kind"
            )
    parents = _parents(target)
    kept: dict[str, str] = {}
    for composite, state in entries.items():
        unknown_names = [n for n in (composite, state) if n not in live_composite]
        if unknown_names:
            if any(n not in alive.values() for n in unknown_names):
                differences.append(
                    f"the history of {composite!r} goes to {state!r}, which the machine "
                    "does not have"
                )
            continue
        if live_composite[composite] and _inside(parents, state, composite):
            kept[composite] = state
        # else the state moved out of the composite: its history no longer holds
    return Migrated(current=active, history=kept, data=values, differences=differences)


def _names(names: list[str]) -> str:
    return _joined([repr(n) for n in names])


def _joined(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown
