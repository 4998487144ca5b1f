"""The value layer of configuration: Secret, the payload codec, schema checks, policy, rules, diff.

Every error, repr, log line and diff below is searched for :data:`CANARY` (and
the numeric :data:`CANARY_NUMBER`): a secret or a value must never show.
"""

from __future__ import annotations

import copy
import enum
import logging
import pathlib
import pickle
import traceback
import types
from typing import Annotated, Any, Literal

import msgspec
import pytest

from gotstate_persist import KeyRing, rules
from gotstate_persist.config._diff import ConfigChange, diff
from gotstate_persist.config._schema import (
    check_candidate,
    check_definition,
    is_sensitive_name,
    keyring_encrypts,
    policy_problems,
)
from gotstate_persist.config._secret import (
    REDACTED,
    SECRET_EXT_CODE,
    Secret,
    decode_config,
    decode_untyped,
    encode_config,
    scrub,
    secret_values,
    to_plain,
)
from gotstate_persist.errors import ConfigInvalid, FormatError, InvalidArgument

CANARY = "sk-canary-7f3a9qZ"
CANARY_NUMBER = 987654321


def _text_of(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def _assert_clean(text: str) -> None:
    assert CANARY not in text
    assert str(CANARY_NUMBER) not in text


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


class Db(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 5432
    password: Secret = Secret("")

    def __post_init__(self) -> None:
        if self.host.startswith("sk-"):
            raise ValueError(f"host {self.host!r} looks like a key")


class Payments(msgspec.Struct, frozen=True):
    endpoint: Annotated[str, msgspec.Meta(pattern="^https://")]
    timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    mode: Mode = Mode.SAFE
    region: Literal["eu", "us"] = "eu"
    retries: int = 3
    level: Literal[1, 2, 3] = 1
    api_token: Secret = Secret("")
    db: Db | None = None
    replicas: list[Db] = []
    shards: dict[str, Db] = {}
    tags: list[str] = []

    def __post_init__(self) -> None:
        if self.retries == 13:
            raise ValueError(f"unlucky retries with token {self.api_token.reveal()}")


# -- Secret ------------------------------------------------------------------


def test_secret_is_redacted_everywhere() -> None:
    secret = Secret(CANARY)
    assert repr(secret) == f"Secret('{REDACTED}')"
    assert str(secret) == REDACTED
    assert f"{secret}" == REDACTED
    assert f"{secret:>20}" == f"{REDACTED:>20}"
    assert "%s %r" % (secret, secret) == f"{REDACTED} Secret('{REDACTED}')"  # noqa: UP031
    assert repr(Secret("x")) == repr(Secret(CANARY * 10))  # the mask does not leak the length
    assert secret.reveal() == CANARY
    _assert_clean(repr(Payments("https://a", api_token=secret)))


def test_secret_is_immutable() -> None:
    secret = Secret(CANARY)
    with pytest.raises(AttributeError) as raised:
        secret._value = "other"
    _assert_clean(_text_of(raised.value))
    with pytest.raises(AttributeError):
        del secret._value
    with pytest.raises(AttributeError):
        secret.extra = 1
    assert secret.reveal() == CANARY


def test_secret_equality_and_hash_are_by_value() -> None:
    assert Secret(CANARY) == Secret(CANARY)
    assert Secret(CANARY) != Secret(CANARY + "x")
    assert Secret(CANARY) != CANARY
    assert CANARY != Secret(CANARY)  # noqa: SIM300 (the str's side of the comparison)
    assert hash(Secret(CANARY)) == hash(Secret(CANARY))
    assert len({Secret(CANARY), Secret(CANARY), Secret("b")}) == 2


def test_secret_refuses_pickle_but_copies() -> None:
    secret = Secret(CANARY)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError) as raised:
            pickle.dumps(secret, protocol=protocol)
        _assert_clean(_text_of(raised.value))
    with pytest.raises(TypeError):
        pickle.dumps(Payments("https://a", api_token=secret))
    for duplicate in (copy.copy(secret), copy.deepcopy(secret)):
        assert duplicate == secret
        assert repr(duplicate) == f"Secret('{REDACTED}')"
    assert copy.deepcopy(Payments("https://a", api_token=secret)).api_token == secret


def test_secret_refuses_non_text_without_echoing_it() -> None:
    for value in (CANARY.encode(), CANARY_NUMBER, None, [CANARY]):
        with pytest.raises(InvalidArgument) as raised:
            Secret(value)  # type: ignore[arg-type]
        _assert_clean(_text_of(raised.value))


def test_secret_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.config.values")
    with caplog.at_level(logging.DEBUG):
        secret = Secret(CANARY)
        log.info("secret %s %r", secret, secret)
        log.info("value %r", Payments("https://a", api_token=secret))
        log.info("plain %s", to_plain(Payments("https://a", api_token=secret)))
    assert caplog.records
    _assert_clean(caplog.text)


# -- the payload codec --------------------------------------------------------


def _payments() -> Payments:
    return Payments(
        "https://pay",
        mode=Mode.FAST,
        api_token=Secret(CANARY),
        db=Db("db", password=Secret(CANARY + "db")),
        replicas=[Db("r1")],
        shards={"eu": Db("s1", port=1)},
        tags=["a"],
    )


def test_payload_round_trips_and_carries_secrets_as_extension() -> None:
    value = _payments()
    payload = encode_config(value)
    assert decode_config(payload, Payments) == value
    raw = msgspec.msgpack.decode(payload)
    assert raw["api_token"] == msgspec.msgpack.Ext(SECRET_EXT_CODE, CANARY.encode())
    untyped = decode_untyped(payload)
    assert untyped["api_token"] == Secret(CANARY)
    assert untyped["db"]["password"] == Secret(CANARY + "db")
    _assert_clean(repr(untyped))


def test_encode_refuses_non_structs_and_unknown_types() -> None:
    class Leaky:
        def __repr__(self) -> str:
            return CANARY

    class Holder(msgspec.Struct):
        value: Any

    for bad in ({"a": 1}, Holder(Leaky())):
        with pytest.raises(InvalidArgument) as raised:
            encode_config(bad)  # type: ignore[arg-type]
        _assert_clean(_text_of(raised.value))
    with pytest.raises(InvalidArgument, match="Leaky"):
        encode_config(Holder(Leaky()))


class Narrow(msgspec.Struct):
    endpoint: int
    mode: Mode = Mode.SAFE


def test_decode_errors_are_format_errors_without_values() -> None:
    with pytest.raises(FormatError, match=r"\$\.endpoint") as raised:
        decode_config(encode_config(Payments(CANARY)), Narrow)
    _assert_clean(_text_of(raised.value))
    assert raised.value.__cause__ is None and raised.value.__context__ is None

    class Loose(msgspec.Struct):
        endpoint: int
        mode: str

    payload = encode_config(Loose(1, CANARY))
    with pytest.raises(FormatError) as raised:
        decode_config(payload, Narrow)
    _assert_clean(_text_of(raised.value))


def test_damaged_payloads_are_format_errors() -> None:
    unknown_ext = msgspec.msgpack.encode({"a": msgspec.msgpack.Ext(9, CANARY.encode())})
    not_utf8 = msgspec.msgpack.encode({"a": msgspec.msgpack.Ext(SECRET_EXT_CODE, b"\xff\xfe")})
    for payload in (unknown_ext, not_utf8, b"\xc1" + CANARY.encode()):
        for decode in (decode_untyped, lambda p: decode_config(p, Narrow)):
            with pytest.raises(FormatError) as raised:
                decode(payload)
            _assert_clean(_text_of(raised.value))
            assert raised.value.__context__ is None


def test_to_plain_redacts_unless_revealed() -> None:
    value = _payments()
    plain = to_plain(value)
    assert plain["api_token"] == REDACTED
    assert plain["db"]["password"] == REDACTED
    assert plain["mode"] == "fast"
    _assert_clean(repr(plain))
    assert to_plain(value, reveal=True)["api_token"] == CANARY
    assert to_plain({"k": [Secret(CANARY)]}) == {"k": [REDACTED]}


def test_secret_values_and_scrub() -> None:
    value = _payments()
    assert set(secret_values(value)) == {CANARY, CANARY + "db"}
    assert secret_values(decode_untyped(encode_config(value))) == secret_values(value)
    assert secret_values(Payments("https://a")) == []  # the empty default is no secret
    text = f"failed with {CANARY + 'db'} and {CANARY!r} and {'a' + chr(10) + CANARY!r}"
    scrubbed = scrub(text, [CANARY, CANARY + "db", "", "a\n" + CANARY])
    _assert_clean(scrubbed)
    assert "db" not in scrubbed.replace(REDACTED, "")  # the longer secret left no tail
    assert scrub("nothing here", [""]) == "nothing here"


# -- checking a candidate -----------------------------------------------------


def test_valid_mapping_decodes_and_secrets_may_be_given_as_text() -> None:
    value, problems = check_candidate(
        Payments, {"endpoint": "https://a", "api_token": CANARY, "db": {"host": "h"}}
    )
    assert problems == []
    assert value == Payments("https://a", api_token=Secret(CANARY), db=Db("h"))
    assert check_candidate(Payments, _payments()) == (_payments(), [])
    proxy = types.MappingProxyType({"endpoint": "https://a"})
    assert check_candidate(Payments, proxy) == (Payments("https://a"), [])
    with pytest.raises(InvalidArgument):
        check_candidate(dict, {})  # type: ignore[type-var]


def test_every_problem_is_listed_with_its_path_and_no_value() -> None:
    candidate = {
        "endpoint": CANARY,  # pattern
        "timeout_s": -1.0,  # constraint
        "mode": CANARY,  # enum
        "region": CANARY,  # literal
        "retries": CANARY,  # str where int
        "level": CANARY_NUMBER,  # integer literal
        "api_token": [CANARY],  # a secret that is not text
        "db": {"host": "h", "port": CANARY, "extra": CANARY},  # nested, unknown
        "replicas": [{"host": "h"}, {"port": CANARY_NUMBER}],  # list, missing, constraint
        "shards": {"eu": {"host": CANARY}},  # nested __post_init__ quoting the value
        "tags": ["a", CANARY_NUMBER],
        "surplus": CANARY,
    }
    value, problems = check_candidate(Payments, candidate)
    assert value is None
    assert sorted(problems) == sorted(
        [
            "$.endpoint: expected str matching the field's pattern",
            "$.timeout_s: expected float >= 0.0",
            "$.mode: not one of the allowed values",
            "$.region: not one of the allowed values",
            "$.retries: expected int, got str",
            "$.level: not one of the allowed values",
            "$.api_token: expected Secret (given as str)",
            "$.db.port: expected int, got str",
            "$.db.extra: unknown field",
            "$.replicas[1].host: required field is missing",
            "$.replicas[1].port: expected int <= 65535",
            "$.shards.eu: refused by the schema's __post_init__ check",
            "$.tags[1]: expected str, got int",
            "$.surplus: unknown field",
        ]
    )
    error = ConfigInvalid("payments refused", problems=tuple(problems))
    _assert_clean(_text_of(error) + repr(error.problems))


def test_post_init_of_the_whole_value_runs_last_and_is_not_quoted() -> None:
    value, problems = check_candidate(
        Payments, {"endpoint": "https://a", "retries": 13, "api_token": CANARY}
    )
    assert value is None
    assert problems == ["$: refused by the schema's __post_init__ check"]
    _, problems = check_candidate(Payments, {"endpoint": "https://a", "db": {"host": CANARY}})
    assert problems == ["$.db: refused by the schema's __post_init__ check"]


def test_missing_fields_and_wrong_shapes() -> None:
    assert check_candidate(Payments, {})[1] == ["$.endpoint: required field is missing"]
    for candidate in (CANARY, [CANARY], None):
        value, problems = check_candidate(Payments, candidate)  # type: ignore[arg-type]
        assert value is None
        assert problems == ["$: expected a Payments or a mapping of its fields"]
    assert check_candidate(Payments, {"endpoint": "https://a", "db": CANARY})[1] == [
        "$.db: expected object | null, got str"
    ]


def test_an_instance_with_wrong_typed_fields_is_caught() -> None:
    bad = Payments(CANARY_NUMBER, timeout_s=CANARY, api_token=CANARY)  # type: ignore[arg-type]
    value, problems = check_candidate(Payments, bad)
    assert value is None
    # a str in a Secret field is taken as the secret's text, as in a mapping
    assert sorted(problems) == [
        "$.endpoint: expected str, got int",
        "$.timeout_s: expected float, got str",
    ]
    nested = Payments("https://a", db=Db("h", port=CANARY))  # type: ignore[arg-type]
    assert check_candidate(Payments, nested)[1] == ["$.db.port: expected int, got str"]


# -- the security policy ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "db_password",
        "passwd",
        "token",
        "apiToken",
        "api_token",
        "secret",
        "client_secret",
        "credential",
        "dbCredential",
        "api_key",
        "apiKey",
        "APIKey",
        "apikey",
        "private_key",
        "privateKey",
        "SECRET",
    ],
)
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_name(name)


@pytest.mark.parametrize(
    "name",
    ["max_tokens", "tokenizer", "secretary", "key", "public_key", "api", "passwords_hint"],
)
def test_ordinary_names(name: str) -> None:
    assert not is_sensitive_name(name)


class Creds(msgspec.Struct):
    client_secret: str


class Sensitive(msgspec.Struct):
    db_password: str
    apiToken: str | None
    private_key: Secret | None
    api_key: Secret
    max_tokens: int
    nested: Creds
    many: list[Creds]
    by_name: dict[str, Creds | None]


def test_policy_requires_secret_typing_at_any_depth() -> None:
    assert sorted(policy_problems(Sensitive, keyring_encrypts=True)) == sorted(
        f"{path}: the name says it holds a credential, so it must be typed gp.Secret "
        "(or Optional[gp.Secret])"
        for path in ("$.db_password", "$.apiToken", "$.nested.client_secret")
    )
    assert policy_problems(Payments, keyring_encrypts=True) == []


def test_policy_requires_an_encrypting_keyring_for_secrets() -> None:
    problems = policy_problems(Payments, keyring_encrypts=False)
    assert [problem.split(":")[0] for problem in problems] == ["$.api_token", "$.db.password"]
    assert all("encrypting keyring" in problem for problem in problems)
    assert policy_problems(Narrow, keyring_encrypts=False) == []


def test_keyring_encrypts() -> None:
    assert keyring_encrypts(KeyRing.generate("aes-256-gcm"))
    assert keyring_encrypts(KeyRing.generate("chacha20-poly1305"))
    assert not keyring_encrypts(KeyRing.generate("hmac-sha256"))
    assert not keyring_encrypts(KeyRing.generate("ed25519"))
    assert not keyring_encrypts(KeyRing.generate("ed25519").public())
    assert not keyring_encrypts(None)


def test_check_definition() -> None:
    check_definition(Payments)
    check_definition(Sensitive)  # the policy is separate: definitions only need to decode

    class WithPath(msgspec.Struct):
        where: pathlib.Path

    class ArrayLike(msgspec.Struct, array_like=True):
        a: int

    for bad, words in (
        (dict, "msgspec.Struct subclass"),
        (Payments("https://a"), "msgspec.Struct subclass"),
        (WithPath, "Path"),
        (ArrayLike, "array_like"),
    ):
        with pytest.raises(InvalidArgument, match=words):
            check_definition(bad)


# -- rules ----------------------------------------------------------------------


def _ok() -> Payments:
    return Payments("https://a", api_token=Secret(CANARY), db=Db("h"))


def test_in_range() -> None:
    rule = rules.in_range("$.timeout_s", min=0, max=10)
    assert rule(_ok(), None) == []
    high = msgspec.structs.replace(_ok(), timeout_s=float(CANARY_NUMBER))
    assert rule(high, None) == ["$.timeout_s: expected a number >= 0 and <= 10"]
    _assert_clean(repr(rule(high, None)))
    assert rules.in_range("db.port", min=6000)(_ok(), None) == [
        "$.db.port: expected a number >= 6000"
    ]
    assert rules.in_range("$.db.port", max=6000)(_ok(), None) == []
    assert rules.in_range("$.db.port", max=1)(Payments("https://a"), None) == []  # db is None
    assert rules.in_range("$.timeout_s", max=1)(
        msgspec.structs.replace(_ok(), timeout_s=float("nan")), None
    ) == ["$.timeout_s: expected a number <= 1"]
    assert rules.in_range("$.endpoint", min=0)(_ok(), None) == [
        "$.endpoint: expected a number >= 0"
    ]
    bounds: list[dict[str, Any]] = [{}, {"min": 2, "max": 1}, {"min": "1"}, {"max": float("nan")}]
    for bad in bounds:
        with pytest.raises(InvalidArgument):
            rules.in_range("$.timeout_s", **bad)


def test_rules_report_unknown_paths_at_the_first_call() -> None:
    for rule in (
        rules.in_range("$.nope", min=0),
        rules.matches("$.db.nope", "x"),
        rules.one_of("nope", ["a"]),
        rules.cross_field(lambda c: True, paths=["$.nope"], message="m"),
    ):
        [problem] = rule(_ok(), None)
        assert problem.startswith("$.") and "does not have" in problem
    for bad_path in ("", "$.", "a..b", "$.a b", 5):
        with pytest.raises(InvalidArgument):
            rules.in_range(bad_path, min=0)  # type: ignore[arg-type]


def test_matches() -> None:
    rule = rules.matches("$.endpoint", r"https://[a-z]+")
    assert rule(_ok(), None) == []
    partial = msgspec.structs.replace(_ok(), endpoint="https://a/" + CANARY)
    [problem] = rule(partial, None)
    assert problem.startswith("$.endpoint: does not match")
    _assert_clean(problem)
    secret_rule = rules.matches("$.api_token", r"sk-[a-z]+")
    [problem] = secret_rule(_ok(), None)
    assert problem == "$.api_token: the secret does not have the required form"
    assert rules.matches("$.api_token", r"sk-canary-\w+")(_ok(), None) == []
    with pytest.raises(InvalidArgument):
        rules.matches("$.endpoint", "(")


def test_one_of() -> None:
    assert rules.one_of("$.region", ["eu"])(_ok(), None) == []
    assert rules.one_of("$.mode", ["safe"])(_ok(), None) == []  # an enum by its value
    assert rules.one_of("$.region", ["us"])(_ok(), None) == ["$.region: not one of 'us'"]
    [problem] = rules.one_of("$.api_token", ["other"])(_ok(), None)
    assert problem == "$.api_token: the secret is not one of the allowed values"
    assert rules.one_of("$.api_token", [CANARY])(_ok(), None) == []
    choices: list[Any] = [[], "eu"]
    for bad in choices:
        with pytest.raises(InvalidArgument):
            rules.one_of("$.region", bad)


def test_cross_field() -> None:
    def raises(candidate: Payments) -> bool:
        raise ValueError(f"token was {candidate.api_token.reveal()}")

    rule = rules.cross_field(
        lambda c: c.retries < c.timeout_s, paths=["$.retries", "timeout_s"], message="too many"
    )
    assert rule(_ok(), None) == ["$.retries, $.timeout_s: too many"]
    assert rules.cross_field(lambda c: True, paths=["$.retries"], message="m")(_ok(), None) == []
    [problem] = rules.cross_field(raises, paths=["$.api_token"], message="m")(_ok(), None)
    assert problem == "$.api_token: the cross-field check raised ValueError"
    for bad in ({"paths": [], "message": "m"}, {"paths": ["$.a"], "message": ""}):
        with pytest.raises(InvalidArgument):
            rules.cross_field(lambda c: True, **bad)  # type: ignore[arg-type]


# -- diff -----------------------------------------------------------------------


def test_diff_of_a_first_version_lists_every_leaf() -> None:
    changes = diff(None, Payments("https://a", api_token=Secret(CANARY)))
    paths = [change.path for change in changes]
    assert paths == sorted(paths)
    assert ConfigChange("$.api_token", None, REDACTED) in changes
    assert ConfigChange("$.endpoint", None, "https://a") in changes
    assert ConfigChange("$.shards", None, {}) in changes  # an empty dict is a leaf
    _assert_clean(repr(changes))


def test_diff_shows_changed_secrets_redacted(caplog: pytest.LogCaptureFixture) -> None:
    old = _payments()
    new = msgspec.structs.replace(
        old,
        api_token=Secret(CANARY + "2"),
        timeout_s=3.0,
        db=Db("db", port=6000, password=Secret(CANARY + "db")),
        replicas=[Db("r1"), Db("r2")],
        shards={"us": Db("s2")},
    )
    changes = diff(old, new)
    assert [change.path for change in changes] == [
        "$.api_token",
        "$.db.port",
        "$.replicas",
        "$.shards.eu.host",
        "$.shards.eu.password",
        "$.shards.eu.port",
        "$.shards.us.host",
        "$.shards.us.password",
        "$.shards.us.port",
        "$.timeout_s",
    ]
    assert changes[0] == ConfigChange("$.api_token", REDACTED, REDACTED)
    assert changes[1] == ConfigChange("$.db.port", 5432, 6000)
    assert changes[3] == ConfigChange("$.shards.eu.host", "s1", None)
    assert changes[6] == ConfigChange("$.shards.us.host", None, "s2")
    assert diff(old, old) == []
    with caplog.at_level(logging.INFO):
        logging.getLogger("test.config.values").info("diff %s", changes)
    _assert_clean(repr(changes) + caplog.text + msgspec.json.encode(changes).decode())


class Mimic(msgspec.Struct, frozen=True):
    """A __post_init__ whose message looks like one of msgspec's own."""

    value: int

    def __post_init__(self) -> None:
        if self.value == 13:
            raise ValueError(f"Expected `int`, got `{CANARY}`")


class Cat(msgspec.Struct, frozen=True, tag="cat"):
    lives: int = 9


class Dog(msgspec.Struct, frozen=True, tag="dog"):
    good: bool = True


class Level(enum.IntEnum):
    LOW = 1


class Odd(msgspec.Struct, frozen=True):
    pet: Cat | Dog
    level: Level = Level.LOW
    mimic: Mimic | None = None
    mimics: tuple[Mimic, ...] = ()


def test_user_messages_that_look_like_msgspec_ones_are_not_repeated() -> None:
    _, problems = check_candidate(Odd, {"pet": {"type": "cat"}, "mimic": {"value": 13}})
    assert problems == ["$.mimic: refused by the schema's __post_init__ check"]
    _, problems = check_candidate(Odd, {"pet": {"type": "cat"}, "mimics": [{"value": 13}]})
    assert problems == ["$.mimics[0]: invalid value"]  # a Struct this walk does not enter
    _, problems = check_candidate(
        Odd, {"pet": {"type": CANARY}, "level": CANARY_NUMBER, "mimics": [{"value": CANARY}]}
    )
    assert sorted(problems) == [
        "$.level: not one of the allowed values",
        "$.mimics[0].value: expected int, got str",
        "$.pet.type: not one of the allowed values",
    ]
    _assert_clean(repr(problems))
