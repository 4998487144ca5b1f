"""Canary scan: no secret and no plaintext reaches any output (issue 11, parts 2 and 6).

Canary strings are planted where secrets and plaintext live — a password in
a URL's user info and in ``?password=``, an S3 secret in the options and in
the URL, the key ring's key material, a state-data value and a record field
value, a secret in an upcaster's exception — and failures are driven through
the API and the CLI on SQLite, PostgreSQL and S3. Every output a user, a log
collector or an error reporter could see is then searched for every canary:
``str``, ``repr`` and the full ``traceback.format_exception`` text of each
error and of every exception chained to it (cause and shown context), the
``repr`` of stores and backends, log records of every logger at DEBUG,
warnings, and the CLI's stdout and stderr (in process and as a subprocess).

A case is a function of a :class:`Scene`; add one to :data:`CASES` to cover
a new failure. The scene records what to scan, so a case only drives the
failure and says which error it expects.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from machines import build_ring_machine, set_data

import gotstate_persist as gp
from gotstate_persist import migrations
from gotstate_persist.cli import main
from gotstate_persist.sealing import seal

PW_USERINFO = "cnry-userinfo-pw-Q7x2"
PW_QUERY = "cnry-query-pw-K3m9"
PW_AFTER_AT = "cnry-after-at-pw-R6c8"  # the part of a password after an unescaped '@'
PW_CONNECT_ARGS = "cnry-connect-args-pw-T1k7"
S3_SECRET_OPTION = "cnry-s3-option-secret-W4p1"
S3_SECRET_URL = "cnry-s3-url-secret-Z8d5"
STATE_VALUE = "cnry-state-data-H2v6"
FIELD_VALUE = "cnry-record-field-J5n3"
UPCASTER_SECRET = "cnry-upcaster-message-B9t4"
CANARIES = (
    PW_USERINFO,
    PW_QUERY,
    PW_AFTER_AT,
    PW_CONNECT_ARGS,
    S3_SECRET_OPTION,
    S3_SECRET_URL,
    STATE_VALUE,
    FIELD_VALUE,
    UPCASTER_SECRET,
)
OLD_REVISION = "v0.1.0.a"


# The scan.


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception a traceback printer would show with it."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)


def error_texts(error: BaseException) -> list[str]:
    """Everything ``error`` can print: the whole traceback, and str/repr of each link."""
    texts = ["".join(traceback.format_exception(error))]
    for link in chain(error):
        texts += [str(link), repr(link)]
    return texts


def keyring_secrets(keyring: gp.KeyRing) -> list[str]:
    """A key ring's key material as it could leak: base64 and hex."""
    found = []
    for entry in json.loads(keyring.export())["keys"]:
        for name in ("secret", "private"):
            if name in entry:
                found += [entry[name], base64.b64decode(entry[name]).hex()]
    return found


def assert_no_canary(texts: list[str], canaries: list[str]) -> None:
    for text in texts:
        for canary in canaries:
            assert canary not in text, f"canary {canary!r} leaked into:\n{text}"


@dataclass
class Scene:
    """What a case drives failures through, and everything it recorded to scan."""

    tmp_path: Path
    request: pytest.FixtureRequest
    capsys: pytest.CaptureFixture[str]
    keyring: gp.KeyRing = field(default_factory=gp.KeyRing.generate)
    texts: list[str] = field(default_factory=list)
    canaries: list[str] = field(default_factory=lambda: list(CANARIES))

    def fails(self, expected: type[BaseException], call: Callable[[], object]) -> BaseException:
        """Run ``call``, which must raise ``expected``; record all the error can print."""
        with pytest.raises(expected) as caught:
            call()
        self.texts += error_texts(caught.value)
        return caught.value

    def shows(self, *objects: object) -> None:
        """Record what printing ``objects`` shows (a store, a backend, a report)."""
        for item in objects:
            self.texts += [str(item), repr(item)]

    def cli(self, *argv: str, status: int) -> str:
        """Run the command in process; record its stdout and stderr."""
        self.capsys.readouterr()
        assert main(list(argv)) == status
        out, err = self.capsys.readouterr()
        self.texts += [out, err]
        return err

    def cli_process(self, *argv: str, status: int, env: dict[str, str] | None = None) -> str:
        """Run the command as a real process (uncaught tracebacks would show here)."""
        done = subprocess.run(
            [sys.executable, "-m", "gotstate_persist.cli", *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
        self.texts += [done.stdout, done.stderr]
        assert done.returncode == status, done.stderr
        return done.stderr

    def keys_file(self, keyring: gp.KeyRing | None = None) -> str:
        path = self.tmp_path / "keys.json"
        path.write_text((keyring or self.keyring).export(), encoding="utf-8")
        return str(path)

    def sqlite(self, name: str = "state.db", query: str = "") -> str:
        return f"sqlite:///{self.tmp_path / name}{query}"

    def postgres(self) -> Any:
        return self.request.getfixturevalue("postgres_server")

    def pg_database(self) -> str:
        """A fresh database's name on the test server."""
        url: str = self.request.getfixturevalue("pg_url")
        return url.rsplit("/", 1)[1]

    def s3(self) -> tuple[str, dict[str, Any]]:
        found: tuple[str, dict[str, Any]] = self.request.getfixturevalue("s3_url")
        return found


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# Records, formats and machines holding plaintext canaries.


class Secretive(msgspec.Struct):
    field: str


class SecretiveV2(msgspec.Struct):
    field: str
    extra: int


class Strict(msgspec.Struct):
    field: Literal["allowed"]


def _formats(*, upcast: Callable[[Any], Any] | None = None, strict: bool = False) -> Any:
    formats = gp.FormatRegistry()
    formats.register(Strict if strict else Secretive, kind="secretive", version=1)
    if upcast is not None:
        formats.register(SecretiveV2, kind="secretive", version=2, upcast=upcast)
    return formats


def _save_record(scene: Scene, url: str) -> None:
    with gp.open_store(url, keyring=scene.keyring, formats=_formats()) as store:
        store.save("r", Secretive(FIELD_VALUE))


def _leaky_upcaster(data: Any) -> Any:
    raise ValueError(f"{UPCASTER_SECRET}: cannot upcast {data!r}")


# SQLite and URLs that never reach a server.


def case_sqlite_query_password(scene: Scene) -> None:
    url = scene.sqlite(query=f"?password={PW_QUERY}")
    with gp.open_store(url, keyring=scene.keyring) as store:
        scene.shows(store, store.backend)
        scene.fails(gp.NotFound, lambda: store.load("missing"))


def case_sqlite_outdated_schema(scene: Scene) -> None:
    url = scene.sqlite(query=f"?password={PW_QUERY}")
    migrations.upgrade(url, OLD_REVISION)
    error = scene.fails(gp.SchemaOutdated, lambda: gp.open_store(url, keyring=scene.keyring))
    assert "gotstate-persist db upgrade" in str(error)
    scene.cli("db", "check", url, status=1)
    scene.cli("ls", url, status=1)


def case_url_without_scheme(scene: Scene) -> None:
    for url in (PW_USERINFO, f"gsp:{PW_USERINFO}@localhost/db", f"postgres:{PW_USERINFO}"):
        scene.fails(gp.InvalidArgument, lambda url=url: gp.open_store(url, keyring=scene.keyring))  # type: ignore[misc]
        scene.cli("ls", url, status=2)
        scene.cli("db", "current", url, status=2)


def case_cli_usage_error_quotes_an_argument(scene: Scene) -> None:
    url = f"postgresql://gsp:{PW_USERINFO}@db/app?password={PW_QUERY}"
    err = scene.cli("ls", scene.sqlite(), url, status=2)  # one URL too many
    assert "unrecognized arguments: postgresql://gsp:***@db/app?password=***" in err
    scene.cli_process("db", "check", url, url, status=2)


def case_sql_url_without_host(scene: Scene) -> None:
    url = f"postgresql://gsp:{PW_USERINFO}"  # forgot '@host': the password parses as a port
    scene.fails(gp.InvalidArgument, lambda: gp.open_store(url, keyring=scene.keyring))
    scene.fails(gp.InvalidArgument, lambda: migrations.current(url))
    scene.cli("ls", url, status=2)


def case_unescaped_at_in_password(scene: Scene) -> None:
    url = f"postgresql://gsp:{PW_USERINFO}@{PW_AFTER_AT}@127.0.0.1:{_closed_port()}/db"
    scene.fails(gp.PersistError, lambda: gp.open_store(url, keyring=scene.keyring))
    scene.cli("ls", url, status=1)


def case_http_userinfo_and_token(scene: Scene) -> None:
    port = _closed_port()
    url = f"http://{PW_USERINFO}@127.0.0.1:{port}/store?token={PW_QUERY}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            backend = gp.backends.open_backend(url)
        except gp.PersistError as error:
            scene.texts += error_texts(error)
        else:
            with backend:
                scene.shows(backend)
                try:
                    backend.keys("default", "")
                except gp.PersistError as error:
                    scene.texts += error_texts(error)


# Plaintext: decrypted records and state data.


def case_upcaster_exception(scene: Scene) -> None:
    url = scene.sqlite()
    _save_record(scene, url)
    with gp.open_store(url, keyring=scene.keyring, formats=_formats(upcast=_leaky_upcaster)) as s:
        error = scene.fails(gp.FormatError, lambda: s.load("r"))
        assert "ValueError" in str(error)  # the type is kept, the message is not
        scene.shows(s.migrate("secretive"))


def case_upcaster_output_refused(scene: Scene) -> None:
    url = scene.sqlite()
    _save_record(scene, url)
    formats = _formats(upcast=lambda data: {**data, "extra": data["field"]})
    with gp.open_store(url, keyring=scene.keyring, formats=formats) as store:
        scene.fails(gp.FormatError, lambda: store.load("r"))


def case_validation_error_quotes_a_value(scene: Scene) -> None:
    url = scene.sqlite()
    _save_record(scene, url)
    with gp.open_store(url, keyring=scene.keyring, formats=_formats(strict=True)) as store:
        scene.fails(gp.FormatError, lambda: store.load("r"))
        scene.shows(store.migrate("secretive", dry_run=True))


def case_decrypted_bytes_are_not_utf8(scene: Scene) -> None:
    """A payload that authenticates but is not valid UTF-8 (JSON codec and msgpack)."""
    url = scene.sqlite()
    text = FIELD_VALUE.encode() + b"\xff\xfe"
    payloads = {
        gp.codec.JSON.id: b'["secretive",1,{"field":"' + text + b'"}]',
        gp.codec.MSGPACK.id: b"\x93\xa9secretive\x01\x81\xa5field\xd9" + bytes([len(text)]) + text,
    }
    with gp.open_store(url, keyring=scene.keyring, formats=_formats()) as store:
        for version, (codec_id, payload) in enumerate(payloads.items(), start=1):
            blob = seal(
                scene.keyring,
                payload,
                codec_id=codec_id,
                namespace="default",
                key="r",
                version=version,
            )
            store.backend.put(
                "default",
                "r",
                version,
                blob,
                kind="secretive",
                format_version=1,
                created_at_us=1,
            )
            scene.fails(gp.FormatError, lambda v=version: store.load("r", version=v))  # type: ignore[misc]


def case_state_data_and_wrong_keyring(scene: Scene) -> None:
    url = scene.sqlite()
    machine = build_ring_machine()
    machine.start()
    set_data(machine, "start", "note", STATE_VALUE)
    with gp.open_store(url, keyring=scene.keyring) as store:
        store.save_machine("m", machine)
        other = build_ring_machine(n_states=9, groups=2)
        scene.fails(gp.StructureMismatch, lambda: store.restore_machine("m", other))
    intruder = gp.KeyRing.generate()
    scene.canaries += keyring_secrets(intruder)
    with gp.open_store(url, keyring=intruder) as store:
        scene.fails(gp.IntegrityError, lambda: store.restore_machine("m", build_ring_machine()))
    scene.cli("verify", url, "--keys", scene.keys_file(intruder), status=1)
    scene.cli("ls", url, status=0)


class Leaky:
    """A value no codec can save, whose repr and str are plaintext."""

    def __repr__(self) -> str:
        return f"Leaky({STATE_VALUE})"

    __str__ = __repr__


def case_save_refuses_a_value(scene: Scene) -> None:
    with gp.open_store(scene.sqlite(), keyring=scene.keyring, formats=_formats()) as store:
        for value in (Leaky(), f"{STATE_VALUE}\ud800", {Leaky(): 1}):
            machine = build_ring_machine()
            machine.start()
            set_data(machine, "start", "note", value)
            scene.fails(gp.FormatError, lambda m=machine: store.save_machine("m", m))  # type: ignore[misc]
        for field_value in (Leaky(), f"{FIELD_VALUE}\ud800", 10**30):
            record = Secretive(field_value)  # type: ignore[arg-type]  # wrong on purpose
            scene.fails(gp.FormatError, lambda r=record: store.save("r", r))  # type: ignore[misc]


def case_malformed_keyring(scene: Scene) -> None:
    exported = json.loads(scene.keyring.export())
    exported["keys"][0]["secret"] = base64.b64encode(b"\x07" * 31).decode()  # wrong length
    text = json.dumps(exported)
    scene.canaries += [exported["keys"][0]["secret"]]
    scene.fails(gp.InvalidArgument, lambda: gp.KeyRing.load(text))
    path = scene.tmp_path / "bad-keys.json"
    path.write_text(text, encoding="utf-8")
    url = scene.sqlite()
    _save_record(scene, url)
    scene.cli("verify", url, "--keys", str(path), status=2)
    scene.shows(scene.keyring)


# PostgreSQL.


def case_postgres_wrong_password_in_userinfo(scene: Scene) -> None:
    server = scene.postgres()
    url = server.url(scene.pg_database(), password=PW_USERINFO)
    error = scene.fails(gp.BackendError, lambda: gp.open_store(url, keyring=scene.keyring))
    assert "password authentication failed" in str(error)
    scene.cli("ls", url, status=1)
    scene.cli("db", "upgrade", url, status=1)
    scene.cli_process("ls", url, status=1)


def case_postgres_wrong_password_in_query(scene: Scene) -> None:
    server = scene.postgres()
    url = f"postgresql://{server.role}@{server.host}:{server.port}/{scene.pg_database()}"
    url += f"?password={PW_QUERY}"
    error = scene.fails(gp.BackendError, lambda: gp.open_store(url, keyring=scene.keyring))
    assert "password=***" in str(error)
    scene.fails(gp.BackendError, lambda: migrations.current(url))
    scene.cli("ls", url, status=1)
    scene.cli("db", "check", url, status=1)
    without = url.partition("?")[0]
    engine_options = {"connect_args": {"password": PW_CONNECT_ARGS}}
    scene.fails(
        gp.BackendError,
        partial(gp.open_store, without, keyring=scene.keyring, engine_options=engine_options),
    )


def case_postgres_unreachable(scene: Scene) -> None:
    url = (
        f"postgresql://gsp:{PW_USERINFO}@127.0.0.1:{_closed_port()}/db"
        f"?sslpassword={PW_QUERY}&connect_timeout=5"
    )
    scene.fails(gp.BackendError, lambda: gp.open_store(url, keyring=scene.keyring))
    scene.fails(gp.BackendError, lambda: migrations.upgrade(url))
    scene.cli("ls", url, status=1)
    scene.cli_process("db", "current", url, status=1)


def case_postgres_outdated_schema(scene: Scene) -> None:
    server = scene.postgres()
    scene.canaries.append(server.password)
    url = (
        f"postgresql://{server.role}@{server.host}:{server.port}/{scene.pg_database()}"
        f"?password={server.password}"
    )
    migrations.upgrade(url, OLD_REVISION)
    error = scene.fails(gp.SchemaOutdated, lambda: gp.open_store(url, keyring=scene.keyring))
    assert "gotstate-persist db upgrade" in str(error)
    scene.cli("db", "check", url, status=1)
    scene.cli("db", "current", url, status=0)
    with gp.open_store(url, keyring=scene.keyring, upgrade=True) as store:
        scene.shows(store, store.backend)


def case_postgres_catalog(scene: Scene) -> None:
    server = scene.postgres()
    catalog = server.url(scene.pg_database(), password=PW_USERINFO)
    (scene.tmp_path / "objects").mkdir()
    objects = f"file://{scene.tmp_path / 'objects'}"
    scene.fails(
        gp.BackendError, lambda: gp.open_store(objects, keyring=scene.keyring, catalog=catalog)
    )
    scene.cli("ls", objects, "--catalog", catalog, status=1)
    good = scene.sqlite("catalog.db", f"?password={PW_QUERY}")
    with gp.open_store(objects, keyring=scene.keyring, catalog=good) as store:
        scene.shows(store, store.backend)


def case_another_catalog(scene: Scene) -> None:
    """The layout marker names its catalog, and refusing another one names both."""
    (scene.tmp_path / "objects").mkdir()
    objects = f"file://{scene.tmp_path / 'objects'}"
    written = scene.sqlite("catalog.db", f"?password={PW_QUERY}")
    with gp.open_store(objects, keyring=scene.keyring, formats=_formats(), catalog=written) as s:
        s.save("r", Secretive(FIELD_VALUE))  # the first write records the marker
    scene.texts.append((scene.tmp_path / "objects" / "gotstate-persist.json").read_text())
    other = scene.sqlite("other.db", f"?password={PW_QUERY}")
    scene.fails(
        gp.InvalidArgument, lambda: gp.open_store(objects, keyring=scene.keyring, catalog=other)
    )
    scene.fails(gp.InvalidArgument, lambda: gp.open_store(objects, keyring=scene.keyring))
    scene.cli("ls", objects, "--catalog", other, status=2)


# S3 (moto server).


def case_s3_secret_in_options(scene: Scene) -> None:
    url, options = scene.s3()
    options = {**options, "secret": S3_SECRET_OPTION}
    with gp.open_store(url, keyring=scene.keyring, **options) as store:
        scene.shows(store, store.backend)
    missing = "s3://gsp-no-such-bucket-canary/state"
    scene.fails(gp.BackendError, lambda: gp.open_store(missing, keyring=scene.keyring, **options))
    unreachable = {**options, "endpoint_url": f"http://127.0.0.1:{_closed_port()}"}
    unreachable["config_kwargs"] = {"retries": {"max_attempts": 1}}
    scene.fails(gp.BackendError, lambda: gp.open_store(url, keyring=scene.keyring, **unreachable))


def case_s3_secret_in_endpoint_url(scene: Scene) -> None:
    url, options = scene.s3()
    endpoint = f"http://gsp:{S3_SECRET_OPTION}@127.0.0.1:{_closed_port()}"
    options = {**options, "endpoint_url": endpoint}
    options["config_kwargs"] = {"retries": {"max_attempts": 1}}
    # refused before any client could log it
    scene.fails(gp.InvalidArgument, lambda: gp.open_store(url, keyring=scene.keyring, **options))


def case_s3_secret_in_url(scene: Scene) -> None:
    url, options = scene.s3()
    bucket_and_prefix = url.removeprefix("s3://")
    in_url = f"s3://gsp-fake-access-key:{S3_SECRET_URL}@{bucket_and_prefix}"
    options = {name: value for name, value in options.items() if name not in ("key", "secret")}
    scene.fails(gp.InvalidArgument, lambda: gp.open_store(in_url, keyring=scene.keyring, **options))
    scene.cli("ls", in_url, status=2)
    scene.cli_process("ls", in_url, status=2)


CASES = [
    pytest.param(case, id=case.__name__.removeprefix("case_"))
    for case in (
        case_sqlite_query_password,
        case_sqlite_outdated_schema,
        case_url_without_scheme,
        case_cli_usage_error_quotes_an_argument,
        case_sql_url_without_host,
        case_unescaped_at_in_password,
        case_http_userinfo_and_token,
        case_upcaster_exception,
        case_upcaster_output_refused,
        case_validation_error_quotes_a_value,
        case_decrypted_bytes_are_not_utf8,
        case_state_data_and_wrong_keyring,
        case_save_refuses_a_value,
        case_malformed_keyring,
        case_postgres_wrong_password_in_userinfo,
        case_postgres_wrong_password_in_query,
        case_postgres_unreachable,
        case_postgres_outdated_schema,
        case_postgres_catalog,
        case_another_catalog,
        case_s3_secret_in_options,
        case_s3_secret_in_endpoint_url,
        case_s3_secret_in_url,
    )
]


@pytest.mark.parametrize("case", CASES)
def test_no_canary_in_any_output(
    case: Callable[[Scene], None],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="gotstate_persist")
    scene = Scene(tmp_path, request, capsys)
    scene.canaries += keyring_secrets(scene.keyring)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case(scene)
    scene.texts += [str(warning.message) for warning in caught]
    scene.texts += [caplog.text, *(record.getMessage() for record in caplog.records)]
    assert scene.texts, "the case recorded nothing to scan"
    assert_no_canary(scene.texts, scene.canaries)
