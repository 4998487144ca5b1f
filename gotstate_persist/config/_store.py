"""``gp.ConfigStore`` (``store.config``): validate, then commit; read, watch, resolve.

The facade of configuration in one namespace. It checks arguments, runs the
validation pipeline (schema, validators, security policy: every problem
collected, none quoting a value) and hands encoded changes to
:class:`~._commit.ConfigLog`, which owns atomicity and the stored layout.
Definitions live in the process (``_definitions``); providers and
provenance in ``_providers``/``_resolve``; live values and watches in
``_live``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from .._names import check_name
from .._pipeline import RecordPipeline
from ..errors import ConfigInvalid, InvalidArgument, PersistError
from ..formats.config import ConfigValue
from ._commit import Change, ConfigLog, quota_retention, stale_version
from ._definitions import (
    ConfigRef,
    Definition,
    Definitions,
    Upcaster,
    Validator,
    is_reserved,
    ref_of,
)
from ._diff import ConfigChange, diff
from ._schema import check_candidate, keyring_encrypts, policy_problems
from ._secret import encode_config, scrub, secret_values, to_plain

if TYPE_CHECKING:
    from ..extensions import ExtensionRegistry
    from ._live import LiveConfig

__all__ = ["ConfigRef", "ConfigStore", "ConfigTransaction", "ref_of"]

logger = logging.getLogger(__name__)

#: How often a watcher polls the log for other processes' commits.
DEFAULT_POLL_S = 0.05


class ConfigStore:
    """Typed, validated, versioned configuration of one namespace.

    Get it as ``store.config``. Thread-safe. Every write is a compare-and-set
    (``expected_version`` is required) and validates first: a refusal raises
    :class:`~gotstate_persist.ConfigInvalid` listing every problem and writes
    nothing.
    """

    def __init__(
        self,
        pipeline: RecordPipeline,
        *,
        extensions: Callable[[], ExtensionRegistry] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._log = ConfigLog(pipeline)
        self._definitions = Definitions()
        self._live: weakref.WeakSet[LiveConfig] = weakref.WeakSet()
        # name -> (stored value, schema, decoded): for shareable schemas only
        self._shared: dict[str, tuple[ConfigValue, type[msgspec.Struct], Any]] = {}
        self._extensions = extensions

    def __repr__(self) -> str:
        return f"<ConfigStore namespace={self._pipeline.namespace!r}>"

    @property
    def log(self) -> ConfigLog:
        """The commit protocol underneath (for ``watch``, ``live`` and tools)."""
        return self._log

    # Definitions.

    def define(
        self,
        name: str,
        schema: type[msgspec.Struct],
        *,
        validators: Sequence[Validator | str] = (),
        version: int = 1,
        upcast: Upcaster | None = None,
    ) -> None:
        """Define configuration ``name`` as ``schema`` (in this process; writes nothing).

        Idempotent. ``validators`` are callables ``(candidate, previous) ->
        list[str]`` or names of active ``configuration`` extensions.
        ``version``/``upcast`` add a newer format, as for record formats.
        The schema is checked against the security policy now.
        """
        problems = policy_problems(schema, keyring_encrypts=self._encrypts())
        if problems:
            raise InvalidArgument(
                f"configuration {name!r} cannot be defined with {schema.__qualname__}: "
                + "; ".join(problems)
            )
        self._definitions.define(
            name, schema, validators=validators, version=version, upcast=upcast
        )

    def defined(self) -> list[str]:
        """The names defined in this process, sorted."""
        return self._definitions.names()

    def names(self) -> list[str]:
        """Every configuration with a stored version in this namespace, sorted."""
        _, commit = self._log.newest()
        return sorted(commit.heads)

    # Writing.

    def put(self, name: str, value: Any, *, expected_version: int, reason: str = "") -> ConfigRef:
        """Validate ``value`` and store it as version ``expected_version + 1``.

        ``value`` is an instance of the schema or a mapping (as read from TOML
        or JSON). ``VersionConflict`` if ``name`` is not at
        ``expected_version`` (0: it has none yet); ``ConfigInvalid`` with
        every problem if it is refused. Either way nothing is written.
        """
        with self.transaction() as tx:
            tx.put(name, value, expected_version=expected_version, reason=reason)
        return tx.refs[0]

    def rollback(
        self, name: str, *, to: int, expected_version: int, reason: str | None = None
    ) -> ConfigRef:
        """Store version ``to`` again as a new version, re-validated (history stays as it was)."""
        old = self.get(name, version=to)
        return self.put(
            name,
            old,
            expected_version=expected_version,
            reason=f"rollback to version {to}" if reason is None else reason,
        )

    def transaction(self) -> ConfigTransaction:
        """Several configurations' puts, committed all together or not at all."""
        return ConfigTransaction(self)

    # Reading.

    def get(self, name: str, *, version: int | None = None) -> Any:
        """The newest (or the given) version of ``name`` as its newest schema."""
        definition = self._definition(name)
        return self._decoded(definition, self._log.value(name, version))

    def _decoded(self, definition: Definition, stored: ConfigValue) -> Any:
        """``stored`` decoded; shared between calls when nothing in it can change."""
        if not definition.shareable:
            return definition.decode(stored.schema_version, stored.payload)
        cached = self._shared.get(definition.name)
        if cached is not None and cached[0] is stored and cached[1] is definition.schema:
            return cached[2]
        value = definition.decode(stored.schema_version, stored.payload)
        self._shared[definition.name] = (stored, definition.schema, value)
        return value

    def current(self, name: str) -> tuple[int, Any]:
        """The newest version of ``name`` and its value, read together."""
        definition = self._definition(name)
        stored = self._log.value(name)
        return stored.version, self._decoded(definition, stored)

    def get_many(self, names: Sequence[str]) -> dict[str, Any]:
        """The newest version of each name, from one commit: never half a transaction."""
        definitions = {name: self._definition(name) for name in names}
        stored = self._log.values(definitions)
        return {name: self._decoded(definitions[name], value) for name, value in stored.items()}

    def history(self, name: str) -> list[ConfigRef]:
        """Every kept version of ``name``, oldest first ([] if it has none)."""
        check_name(name, "configuration name")
        return [ref_of(value) for value in self._log.history(name)]

    def diff(self, name: str, old: int, new: int) -> list[ConfigChange]:
        """What changed between two versions, leaf by leaf; secrets shown redacted."""
        return diff(self.get(name, version=old), self.get(name, version=new))

    def watch(
        self,
        name: str,
        *,
        since: int = 0,
        timeout: float | None = None,
        poll_s: float = DEFAULT_POLL_S,
    ) -> Iterator[ConfigRef]:
        """Every version of ``name`` after ``since``, in order, then each new one as it lands.

        Gap-free and resumable: pass the last version you handled as
        ``since``. With ``timeout`` the iteration ends after that many
        seconds without a new version. A version removed by retention is
        ``NotFound``.
        """
        check_name(name, "configuration name")
        if type(since) is not int or since < 0:
            raise InvalidArgument("since must be a version number (an int >= 0)")
        last = since
        while True:
            number, _ = self._log.newest()
            for value in self._log.after(name, last):
                last = value.version
                yield ref_of(value)
            waited = _FOREVER if timeout is None else timeout
            if not self._log.wait(number, waited, poll_s) and timeout is not None:
                return  # without a timeout, a quiet hour just means another wait

    def live(self, name: str, *, poll_s: float = DEFAULT_POLL_S) -> LiveConfig:
        """A :class:`LiveConfig` following ``name``: ``.value`` is always whole and valid."""
        from ._live import LiveConfig

        live = LiveConfig(self, name, poll_s=poll_s)
        self._live.add(live)
        return live

    def close(self) -> None:
        """Stop every live value this store started (``Store.close`` calls it)."""
        for live in list(self._live):
            live.close()

    # Resolving.

    def resolve(self, name: str, *, providers: Sequence[Any] | None = None) -> Any:
        """Merge ``providers`` (lowest precedence first) over the defaults, validated like a put."""
        from ._resolving import resolve

        value, _fields = resolve(self, name, providers)
        return value

    def explain(self, name: str, *, providers: Sequence[Any] | None = None) -> list[Any]:
        """Per field: its value (secrets redacted), the winning source and those it overrode."""
        from ._resolving import resolve

        _value, fields = resolve(self, name, providers)
        return fields

    # Internals used by the transaction, live values and resolving.

    def definition(self, name: str) -> Definition:
        """The definition of ``name`` (InvalidArgument naming ``define`` when missing)."""
        return self._definition(name)

    def _definition(self, name: str) -> Definition:
        return self._definitions.get(name)

    def retention(self) -> tuple[int | None, bool]:
        """The namespace quota's ``(max_versions_per_key, prune oldest?)`` now."""
        return quota_retention(self._pipeline)

    def _encrypts(self) -> bool:
        return keyring_encrypts(self._pipeline.keyring)

    def validated(
        self, name: str, candidate: Any, previous: Any
    ) -> tuple[msgspec.Struct | None, list[str]]:
        """Run the schema, the validators and the security policy: (value, problems)."""
        definition = self._definition(name)
        value, problems = check_candidate(definition.schema, candidate)
        if value is not None:
            for validator in definition.validators:
                problems.extend(self._run_validator(name, validator, value, previous))
        problems.extend(policy_problems(definition.schema, keyring_encrypts=self._encrypts()))
        return value, problems

    def _run_validator(
        self, name: str, validator: Validator | str, value: Any, previous: Any
    ) -> list[str]:
        if isinstance(validator, str):
            return self._run_extension_validator(validator, value)
        label = getattr(validator, "__qualname__", type(validator).__qualname__)
        try:
            found = validator(value, previous)
        except Exception as exc:
            # not chained, not logged with its message: it may quote the candidate
            return [f"$: validator {label} raised {type(exc).__name__}; fix the validator"]
        if (
            not isinstance(found, Sequence)
            or isinstance(found, str)
            or not all(isinstance(problem, str) for problem in found)
        ):
            return [f"$: validator {label} did not return a list of problems (str)"]
        return list(found)

    def _run_extension_validator(self, extension: str, value: Any) -> list[str]:
        try:
            found = self.extension_call(extension, "validate", to_plain(value))
        except PersistError as exc:
            return [f"$: validator extension {extension!r} failed ({type(exc).__name__})"]
        return [str(problem) for problem in found]

    def extension_call(self, extension: str, method: str, payload: Any) -> Any:
        """Call an active ``configuration`` extension of this store, under its isolation."""
        if self._extensions is None:
            raise InvalidArgument(f"extension {extension!r} is not available to this store")
        return self._extensions().handle(extension).call(method, payload)


#: ``watch`` without a timeout waits this long per wait, then waits again.
_FOREVER = 3600.0


class ConfigTransaction:
    """Puts to several configurations, committed as one (``with cfg.transaction() as tx``).

    Every put is validated when the block ends; all problems of all
    configurations are reported together. On an exception in the block
    nothing is committed.
    """

    def __init__(self, config: ConfigStore) -> None:
        self._config = config
        self._puts: dict[str, tuple[Any, int, str]] = {}
        self._done = False
        #: The committed versions, in the order of the puts (after the block).
        self.refs: list[ConfigRef] = []

    def put(self, name: str, value: Any, *, expected_version: int, reason: str = "") -> None:
        """Add ``name``'s new value to the transaction (checked when it commits)."""
        if self._done:
            raise InvalidArgument("this transaction has ended; start another one")
        check_name(name, "configuration name")
        if is_reserved(name):
            raise InvalidArgument(
                f"configuration {name!r} holds an extension's settings: change it with "
                "store.extensions.configure(extension_name, settings, expected_version=...)"
            )
        if type(expected_version) is not int or expected_version < 0:
            raise InvalidArgument("expected_version must be an int >= 0 (0: the first version)")
        if not isinstance(reason, str):
            raise InvalidArgument("reason must be a str")
        if name in self._puts:
            raise InvalidArgument(f"configuration {name!r} is already in this transaction")
        self._config.definition(name)
        self._puts[name] = (value, expected_version, reason)

    def __enter__(self) -> ConfigTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True
        if exc_type is None and self._puts:
            self.refs = self._commit()

    def _commit(self) -> list[ConfigRef]:
        config = self._config
        log = config.log
        changes: list[Change] = []
        problems: list[str] = []
        secrets: list[str] = []
        seen = log.newest()
        for name, (candidate, expected, reason) in self._puts.items():
            definition = config.definition(name)
            stored = log.head_value(seen[1], name)
            actual = stored.version if stored is not None else 0
            if actual != expected:  # the commit checks again; refuse before validating
                raise stale_version(name, expected, actual)
            previous = (
                None if stored is None else definition.decode(stored.schema_version, stored.payload)
            )
            secrets.extend(secret_values(candidate))
            value, found = config.validated(name, candidate, previous)
            # a validator may quote any secret it was shown: the decoded candidate's (a
            # mapping's secrets are plain str until decoded) and the previous version's
            secrets.extend(secret_values(value) + secret_values(previous))
            prefix = f"{name}: " if len(self._puts) > 1 else ""
            problems.extend(prefix + problem for problem in found)
            if value is not None and not found:
                changes.append(
                    Change(name, expected, definition.version, encode_config(value), reason)
                )
        if problems:
            shown = [scrub(problem, secrets) for problem in problems]
            raise ConfigInvalid(
                f"{len(shown)} problem(s); nothing was written:\n  " + "\n  ".join(shown),
                problems=tuple(shown),
            )
        written = log.commit(changes, max_versions=config.retention, seen=seen)
        return [ref_of(value) for value in written]
