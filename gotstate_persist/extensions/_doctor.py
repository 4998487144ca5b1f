"""What containment this host gives an extension, probed honestly, for ``ext doctor``.

The claims ladder of the extensions contract (in-process is *guarded*, a
worker is *contained*, a worker inside an operator's sandbox prefix is
*sandboxed*) is only true where the host provides the layers it rests on:
an interpreter that starts in isolated mode (``-I``), resource limits the
worker can lower, and, for *sandboxed*, a prefix command that exists. This
module owns the probing, so the command line and the tests read the same
typed :class:`DoctorReport`; the CLI only prints it.

Probing changes nothing: limits are read with ``getrlimit`` (never set),
``/proc`` and the cgroup file system are read, and the one process started
is the bare interpreter in isolated mode with the worker's scrubbed
environment. The sandbox prefix is *not* run (it may create scopes or
namespaces): doctor says whether its command is found and what its words
claim, never that it holds. What no layer here closes is said in ``gaps``.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import msgspec

from ..formats.extension import ResourceLimits
from ._workerspawn import WORKER_ENV, isolated_python_finds_package, worker_command

__all__ = [
    "CgroupProbe",
    "DoctorReport",
    "LimitProbe",
    "PrefixProbe",
    "Rung",
    "RungProbe",
    "diagnose",
]

Rung = Literal["guarded", "contained", "sandboxed"]

#: The rlimits a worker lowers before importing an extension, and the
#: ``ResourceLimits`` field each one enforces (``RLIMIT_CORE`` is always 0).
_LIMITED: Final = (
    ("RLIMIT_AS", "memory_bytes"),
    ("RLIMIT_CPU", "cpu_s"),
    ("RLIMIT_FSIZE", "file_size_bytes"),
    ("RLIMIT_NOFILE", "open_files"),
    ("RLIMIT_CORE", ""),
)
#: bwrap options that give the worker its own PID namespace (the host's processes hidden).
_PID_HIDING: Final = frozenset({"--unshare-pid", "--unshare-all"})
_START_TIMEOUT_S: Final = 20.0
_ISOLATED_CHECK: Final = "import sys; sys.exit(0 if sys.flags.isolated else 3)"
_CGROUP2: Final = "cgroup2"


class LimitProbe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One resource limit: what the host allows and what a default worker gets.

    ``soft``/``hard``/``default``/``effective`` are None for "unlimited" (or
    "not set by default"); ``effective`` is what a worker with default
    ``ResourceLimits`` runs with (the worker clamps a value to the hard limit).
    """

    resource: str
    field: str
    settable: bool
    soft: int | None
    hard: int | None
    default: int | None
    effective: int | None
    note: str


class CgroupProbe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whether cgroup v2 is mounted and this process's cgroup is delegated to its user."""

    v2: bool
    path: str
    delegated: bool
    note: str


class PrefixProbe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The operator's worker prefix as given (``words``), and whether its command exists."""

    words: tuple[str, ...]
    command: str
    found: bool
    hides_host_processes: bool
    note: str


class RungProbe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One rung of the claims ladder and whether this host and configuration reach it."""

    rung: Rung
    applies: bool
    meaning: str


class DoctorReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every containment layer of this host, and the highest claim a worker may make."""

    python: str
    python_starts_isolated: bool
    start_note: str
    worker_command: tuple[str, ...]
    bootstrap: bool
    uid: int
    limits: tuple[LimitProbe, ...]
    cgroup: CgroupProbe
    prefix: PrefixProbe
    ladder: tuple[RungProbe, ...]
    rung: Rung
    gaps: tuple[str, ...]


def diagnose(
    worker_prefix: Sequence[str] = (),
    *,
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> DoctorReport:
    """Probe this host for the layers a worker started with ``worker_prefix`` would get.

    ``proc_root`` and ``cgroup_root`` exist so tests can point the cgroup
    probe at a prepared tree; nothing is written to either.
    """
    starts, start_note = _starts_isolated()
    prefix = _probe_prefix(tuple(worker_prefix))
    ladder = (
        RungProbe(
            "guarded",
            True,
            "in-process registrations: a deadline, captured exceptions and validated "
            "outputs; no memory or CPU limit, a runaway call cannot be stopped, host "
            "memory is not protected",
        ),
        RungProbe(
            "contained",
            starts,
            "worker registrations: the host survives any death of the worker, the limits "
            "above hold, the extension sees only serialized views; it runs as the same "
            "user with the same file system and network",
        ),
        RungProbe(
            "sandboxed",
            starts and prefix.found,
            "only with a worker prefix naming an operator's sandbox (bwrap, systemd-run, "
            "...) whose command is found; what it hides is the operator's configuration, "
            "which doctor does not run or judge",
        ),
    )
    highest = [probe.rung for probe in ladder if probe.applies][-1]
    cgroup = _probe_cgroup(proc_root, cgroup_root)
    return DoctorReport(
        python=sys.executable,
        python_starts_isolated=starts,
        start_note=start_note,
        worker_command=worker_command(),
        bootstrap=not isolated_python_finds_package(),
        uid=os.geteuid(),
        limits=tuple(_probe_limit(name, field) for name, field in _LIMITED),
        cgroup=cgroup,
        prefix=prefix,
        ladder=ladder,
        rung=highest,
        gaps=_gaps(prefix, cgroup),
    )


def _starts_isolated() -> tuple[bool, str]:
    """Start the interpreter as a worker is started (``-I``, scrubbed environment)."""
    if not sys.executable or not os.access(sys.executable, os.X_OK):
        return False, "sys.executable is empty or not executable: no worker can start"
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-I", "-c", _ISOLATED_CHECK],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=dict(WORKER_ENV),
            timeout=_START_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"the interpreter did not start in isolated mode ({type(exc).__name__})"
    if done.returncode != 0:
        return False, f"the interpreter in isolated mode exited with status {done.returncode}"
    return True, "started in isolated mode (-I) with the worker's scrubbed environment"


def _limit_value(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else value


def _default_of(field: str) -> int | None:
    if not field:
        return 0  # RLIMIT_CORE: no core dumps, always
    value = getattr(ResourceLimits(), field)
    return None if value is None else int(value)


def _probe_limit(name: str, field: str) -> LimitProbe:
    default = _default_of(field)
    try:
        soft, hard = resource.getrlimit(getattr(resource, name))
    except (AttributeError, OSError, ValueError):
        return LimitProbe(
            name, field, False, None, None, default, None, "not available on this platform"
        )
    soft_value, hard_value = _limit_value(soft), _limit_value(hard)
    effective = default
    if default is not None and hard_value is not None and hard_value < default:
        effective = hard_value
        note = f"the hard limit is below the default: workers get {hard_value}"
    elif not field:
        note = "a worker sets it to 0: no core dumps"
    elif field == "cpu_s":
        note = "set per call only when a registration gives cpu_s (none by default)"
    elif hard_value is None:
        note = "hard limit unlimited: a worker lowers it to what its registration asks"
    else:
        note = "a worker lowers it to what its registration asks, at most the hard limit"
    return LimitProbe(name, field, True, soft_value, hard_value, default, effective, note)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _probe_cgroup(proc_root: Path, cgroup_root: Path) -> CgroupProbe:
    mounts = [line.split() for line in _read_text(proc_root / "self/mounts").splitlines()]
    mounts = [fields for fields in mounts if len(fields) >= 3]
    # the last mount on a path is the one in effect (an over-mount hides the earlier ones)
    types = [fields[2] for fields in mounts if fields[1] == str(cgroup_root)]
    if not types or types[-1] != _CGROUP2:
        elsewhere = [fields[1] for fields in mounts if fields[2] == _CGROUP2]
        hybrid = (
            f" (cgroup v1 or hybrid; a cgroup2 mount is at {elsewhere[0]})" if elsewhere else ""
        )
        return CgroupProbe(
            False,
            "",
            False,
            f"{cgroup_root} is not a cgroup2 mount{hybrid}: no cgroup v2 limits here",
        )
    own = next(
        (
            line[3:]
            for line in _read_text(proc_root / "self/cgroup").splitlines()
            if line.startswith("0::")
        ),
        "",
    )
    if not own:
        return CgroupProbe(True, "", False, "this process's cgroup v2 path is unknown")
    directory = cgroup_root / own.lstrip("/")
    delegated = os.access(directory, os.W_OK) and os.access(
        directory / "cgroup.subtree_control", os.W_OK
    )
    note = (
        "delegated: a prefix such as 'systemd-run --user --scope -p MemoryMax=...' can put "
        "workers in cgroups of their own"
        if delegated
        else "not delegated to this user: cgroup limits need the operator's setup"
    )
    note += "; gotstate-persist itself creates no cgroups"
    return CgroupProbe(True, own, delegated, note)


def _probe_prefix(words: tuple[str, ...]) -> PrefixProbe:
    if not words:
        return PrefixProbe((), "", False, False, "no worker prefix: workers are not sandboxed")
    first = words[0]
    if os.path.isabs(first):
        command = first if os.access(first, os.X_OK) else ""
    else:
        command = shutil.which(first) or ""
    hides = os.path.basename(first) == "bwrap" and bool(_PID_HIDING.intersection(words))
    if not command:
        note = f"{first!r} is not on PATH (or not executable): every worker start would fail"
    elif hides:
        note = "found; its options give the worker its own PID namespace (not run by doctor)"
    else:
        note = "found; doctor does not run it, so what it hides is not checked"
    return PrefixProbe(words, command, bool(command), hides, note)


def _gaps(prefix: PrefixProbe, cgroup: CgroupProbe) -> tuple[str, ...]:
    uid = os.geteuid()
    gaps = []
    if prefix.hides_host_processes and prefix.found:
        gaps.append(
            "the prefix's options hide the host's processes from a worker (e.g. "
            "/proc/<host pid>/environ), if the sandbox does what they say"
        )
    else:
        gaps.append(
            f"a worker runs as the same user (uid {uid}) as the host and can read "
            "/proc/<host pid>/environ and every file the host can read, unless a prefix "
            "hides the host's processes (e.g. 'bwrap --unshare-pid'); pass secrets to the "
            "host by file, not environment, where that matters"
        )
    if uid == 0:
        gaps.append(
            "the host runs as root, so every worker does: an extension can raise its own "
            "hard limits again; run the host as an unprivileged user"
        )
    if not cgroup.delegated:
        gaps.append(
            "no cgroup of its own per worker: memory is bounded by RLIMIT_AS (address space, "
            "per worker), not the total of all workers"
        )
    gaps.append("network access is not restricted unless a sandbox prefix restricts it")
    return tuple(gaps)
