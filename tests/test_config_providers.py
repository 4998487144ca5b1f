"""Configuration providers, the provenance merge and its explanation (issue 14).

The providers run against a stand-in of the store's resolve context (the store
implements it); the extension provider calls the real example extension's
``load``, so the request shape is the one that extension reads. A stand-in
``Secret`` (the real one is ``gp.Secret``) is enough for the secret protocol:
a class passed as ``secret_type`` with ``reveal()``.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from gotstate_persist_examples.defaults import SiteDefaults
from hypothesis import given
from hypothesis import strategies as st

from gotstate_persist.config._env import EnvProvider
from gotstate_persist.config._files import MAX_FILE_BYTES, FileProvider
from gotstate_persist.config._locate import locate_toml
from gotstate_persist.config._providers import (
    ExtensionProvider,
    Layer,
    Provider,
    ResolveContext,
    StoreProvider,
)
from gotstate_persist.config._resolve import REDACTED, ConfigField, merge
from gotstate_persist.errors import ConfigInvalid, InvalidArgument, NotFound

CANARY = "canary-7f3a9c-secret-token"


class Secret:
    """Stand-in for gp.Secret: immutable, equal by value, redacted repr."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError


class Database(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "localhost"
    port: int = 5432


class Payments(msgspec.Struct, frozen=True):
    endpoint: str
    timeout_s: float = 2.0
    retries: int = 3
    tags: list[str] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    db: Database = Database()
    api_token: Secret = Secret("")


class Context:
    """The store's side of resolving, held in memory."""

    def __init__(
        self,
        schema: type[msgspec.Struct] = Payments,
        stored: dict[int, dict[str, Any]] | None = None,
        name: str = "payments",
    ) -> None:
        self.name = name
        self.schema = schema
        self.versions = stored or {}
        self.requests: list[dict[str, Any]] = []

    def stored(self, version: int | None) -> tuple[dict[str, Any], int] | None:
        if not self.versions:
            return None
        chosen = max(self.versions) if version is None else version
        if chosen not in self.versions:
            raise NotFound(f"version {chosen} does not exist")
        return dict(self.versions[chosen]), chosen

    def extension_load(self, extension: str, request: dict[str, Any]) -> dict[str, Any]:
        assert extension == "site-defaults"
        self.requests.append(request)
        return SiteDefaults().load(request)


def _by_path(fields: list[ConfigField]) -> dict[str, ConfigField]:
    return {item.path: item for item in fields}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


PAYMENTS_TOML = """\
# payments, as deployed
endpoint = "https://file.example"   # not the one that wins
timeout_s = 5.0
notes = '''
timeout_s = 99
[db]
'''
tags = [
  "a",   # first
  "b",
]

[db]
host = "db.internal"
port = 6432
"""


def test_the_context_stand_in_is_a_resolve_context() -> None:
    assert isinstance(Context(), ResolveContext)


def test_file_env_store_and_extension_merge_with_provenance(tmp_path: Path) -> None:
    path = _write(tmp_path, "payments.toml", PAYMENTS_TOML)
    context = Context(stored={3: {"endpoint": "https://old"}, 4: {"endpoint": "https://stored"}})
    environ = {
        "PAY_TIMEOUT_S": "7.5",
        "PAY_DB__PORT": "7000",
        "PAY_API_TOKEN": CANARY,
        "PAY_SERVICE_HOST": "10.0.0.1",  # a platform's variable: ignored
        "OTHER_RETRIES": "9",
    }
    providers: list[Provider] = [
        ExtensionProvider("site-defaults"),
        FileProvider(path),
        StoreProvider(),
        EnvProvider("PAY_", environ=environ),
    ]
    merged = merge(
        Payments, [p.load(context) for p in providers], secret_type=Secret
    )  # what ConfigStore.resolve does before its strict decode
    fields = _by_path(merged.fields)
    shown = str(path)

    assert context.requests == [
        {
            "name": "payments",
            "fields": ["endpoint", "timeout_s", "retries", "tags", "labels", "db", "api_token"],
        }
    ]
    assert fields["$.endpoint"] == ConfigField(
        "$.endpoint",
        "https://stored",
        "store version 4",
        ("extension site-defaults", f"{shown}:2"),
    )
    assert fields["$.timeout_s"] == ConfigField(
        "$.timeout_s",
        7.5,
        "environment PAY_TIMEOUT_S",
        ("default", "extension site-defaults", f"{shown}:3"),
    )
    assert fields["$.retries"] == ConfigField("$.retries", 3, "default", ())
    assert fields["$.tags"] == ConfigField("$.tags", ["a", "b"], f"{shown}:8", ("default",))
    assert fields["$.db.host"] == ConfigField(
        "$.db.host", "db.internal", f"{shown}:14", ("default",)
    )
    assert fields["$.db.port"] == ConfigField(
        "$.db.port", 7000, "environment PAY_DB__PORT", ("default", f"{shown}:15")
    )
    assert fields["$.api_token"] == ConfigField(
        "$.api_token", REDACTED, "environment PAY_API_TOKEN", ("default",)
    )
    assert list(fields) == [
        "$.endpoint",
        "$.timeout_s",
        "$.retries",
        "$.tags",
        "$.labels",
        "$.db.host",
        "$.db.port",
        "$.api_token",
    ]
    # the unknown key of the file reaches the decode (which ignores it here) but no explanation
    assert merged.values["notes"] == "timeout_s = 99\n[db]\n"
    value = msgspec.convert(merged.values, Payments, strict=True, dec_hook=_dec_hook)
    assert value == Payments(
        "https://stored",
        timeout_s=7.5,
        tags=["a", "b"],
        db=Database("db.internal", 7000),
        api_token=Secret(CANARY),
    )
    for text in (
        repr(merged),
        repr(merged.fields),
        str(merged.fields),
        msgspec.json.encode(merged.fields).decode(),
        repr([p.load(context) for p in providers]),
        repr(providers),
    ):
        assert CANARY not in text


def test_a_secret_default_enters_the_values_through_reveal_and_is_shown_redacted() -> None:
    class Token(msgspec.Struct):
        token: Secret = Secret(CANARY)
        nested: list[Secret] = msgspec.field(default_factory=list)

    merged = merge(Token, [Layer("x", {"nested": [CANARY]})], secret_type=Secret)
    assert merged.values == {"token": CANARY, "nested": [CANARY]}
    assert merged.fields == [
        ConfigField("$.token", REDACTED, "default"),
        ConfigField("$.nested", REDACTED, "x", ("default",)),
    ]
    assert CANARY not in repr(merged)


def test_without_a_secret_type_values_are_shown() -> None:
    merged = merge(Payments, [Layer("x", {"endpoint": "https://e"})])
    assert _by_path(merged.fields)["$.endpoint"].value == "https://e"


# -- merge rules ---------------------------------------------------------------


class Inner(msgspec.Struct):
    x: int = -1
    y: int = -2


class Outer(msgspec.Struct):
    c: int
    a: int = -10
    b: int = -20
    inner: Inner = msgspec.field(default_factory=Inner)


LEAVES = ("$.a", "$.b", "$.c", "$.inner.x", "$.inner.y")
DEFAULTS = {"$.a": -10, "$.b": -20, "$.inner.x": -1, "$.inner.y": -2}


def _nested(leaves: dict[str, int]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path, value in leaves.items():
        target = values
        *parents, last = path.split(".")[1:]
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return values


@given(st.lists(st.sets(st.sampled_from(LEAVES)), min_size=1, max_size=5))
def test_the_highest_layer_that_set_a_leaf_wins_and_names_the_ones_it_overrode(
    layer_leaves: list[set[str]],
) -> None:
    layers = [
        Layer(f"layer {index}", _nested({leaf: index * 100 + LEAVES.index(leaf) for leaf in set_}))
        for index, set_ in enumerate(layer_leaves)
    ]
    merged = merge(Outer, layers)
    fields = _by_path(merged.fields)
    for position, leaf in enumerate(LEAVES):
        setters = [index for index, set_ in enumerate(layer_leaves) if leaf in set_]
        lower = ["default"] if leaf in DEFAULTS else []
        got: Any = merged.values
        for part in leaf.split(".")[1:]:
            got = got.get(part) if isinstance(got, dict) else None
        if setters:
            winner = setters[-1]
            expected = ConfigField(
                leaf,
                winner * 100 + position,
                f"layer {winner}",
                tuple(lower + [f"layer {index}" for index in setters[:-1]]),
            )
            assert got == winner * 100 + position
            assert fields[leaf] == expected
        elif leaf in DEFAULTS:
            assert got == DEFAULTS[leaf]
            assert fields[leaf] == ConfigField(leaf, DEFAULTS[leaf], "default", ())
        else:
            assert "c" not in merged.values  # left out: the strict decode reports it missing
            assert leaf not in fields


def test_a_dict_field_or_list_is_one_leaf_replaced_whole() -> None:
    merged = merge(
        Payments,
        [
            Layer("low", {"labels": {"a": "1", "b": "2"}, "tags": ["x", "y"]}),
            Layer("high", {"labels": {"c": "3"}, "tags": ["z"]}),
        ],
    )
    assert merged.values["labels"] == {"c": "3"}
    assert merged.values["tags"] == ["z"]
    assert _by_path(merged.fields)["$.labels"].overridden == ("default", "low")


def test_a_required_nested_struct_starts_from_its_class_defaults() -> None:
    class Service(msgspec.Struct):
        db: Database

    assert merge(Service, []).values == {}
    merged = merge(Service, [Layer("file", {"db": {"host": "h"}})])
    assert merged.values == {"db": {"host": "h", "port": 5432}}
    assert merged.fields == [
        ConfigField("$.db.host", "h", "file", ("default",)),
        ConfigField("$.db.port", 5432, "default"),
    ]


def test_a_nested_struct_given_as_a_non_mapping_is_one_leaf_for_the_decode_to_refuse() -> None:
    merged = merge(Payments, [Layer("low", {"db": 5}), Layer("high", {"db": {"host": "h"}})])
    assert merged.values["db"] == {"host": "h", "port": 5432}
    assert _by_path(merged.fields)["$.db.host"].overridden == ("default",)
    merged = merge(Payments, [Layer("low", {"db": {"host": "h"}}), Layer("high", {"db": 5})])
    assert merged.values["db"] == 5
    assert _by_path(merged.fields)["$.db"] == ConfigField("$.db", 5, "high", ("default", "low"))
    assert "$.db.host" not in _by_path(merged.fields)


def test_merge_refuses_what_is_not_a_schema_or_a_layer() -> None:
    with pytest.raises(InvalidArgument):
        merge(dict, [])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        merge(Payments, [{"endpoint": "x"}])  # type: ignore[list-item]


# -- environment ---------------------------------------------------------------


def _env(environ: dict[str, str], **options: Any) -> Layer:
    return EnvProvider("PAY_", environ=environ, **options).load(Context())


def test_env_coerces_through_the_schema_and_names_the_variable() -> None:
    layer = _env(
        {
            "pay_timeout_s": "1.5",
            "Pay_Retries": "4",
            "PAY_TAGS": '["a", "b"]',
            "PAY_LABELS": '{"k": "v"}',
            "PAY_ENDPOINT": "https://env",
        }
    )
    assert layer.values == {
        "timeout_s": 1.5,
        "retries": 4,
        "tags": ["a", "b"],
        "labels": {"k": "v"},
        "endpoint": "https://env",
    }
    assert layer.origin("$.timeout_s") == "environment pay_timeout_s"
    assert layer.origin("$.retries") == "environment Pay_Retries"


def test_env_nested_struct_by_delimiter_and_as_json() -> None:
    layer = _env({"PAY_DB": '{"host": "json-host", "port": 1}', "PAY_DB__PORT": "2"})
    assert layer.values == {"db": {"host": "json-host", "port": 2}}
    assert layer.origin("$.db.host") == "environment PAY_DB"
    assert layer.origin("$.db.port") == "environment PAY_DB__PORT"
    layer = EnvProvider("PAY_", nested_delimiter="_X_", environ={"PAY_DB_X_HOST": "h"}).load(
        Context()
    )
    assert layer.values == {"db": {"host": "h"}}


def test_env_reports_every_unreadable_variable_by_name_never_by_value() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        _env(
            {
                "PAY_TIMEOUT_S": f"fast-{CANARY}",
                "PAY_RETRIES": CANARY,
                "PAY_TAGS": f"[{CANARY}",
                "PAY_DB__PORT": CANARY,
            }
        )
    assert caught.value.problems == (
        "$.timeout_s: PAY_TIMEOUT_S is not a valid float",
        "$.retries: PAY_RETRIES is not a valid int",
        "$.tags: PAY_TAGS is not a valid list[str] (JSON)",
        "$.db.port: PAY_DB__PORT is not a valid int",
    )
    assert CANARY not in "".join(traceback.format_exception(caught.value))


def test_env_constraints_are_left_to_the_schema() -> None:
    class Limited(msgspec.Struct):
        timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0
        maybe: int | None = None

    layer = EnvProvider("P_", environ={"P_TIMEOUT_S": "-1", "P_MAYBE": "3"}).load(Context(Limited))
    assert layer.values == {"timeout_s": -1.0, "maybe": 3}


def test_env_same_name_in_two_cases_is_a_problem() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        _env({"PAY_RETRIES": "1", "pay_retries": "2"})
    assert caught.value.problems == (
        "$.retries: PAY_RETRIES and pay_retries are all set (names match in any case); "
        "unset all but one",
    )


def test_env_ignores_prefixed_variables_naming_no_field_and_logs_their_names(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="gotstate_persist.config._env"):
        layer = _env({"PAY_SERVICE_PORT": f"tcp://{CANARY}", "PAY_RETRIES": "1"})
    assert layer.values == {"retries": 1}
    assert "PAY_SERVICE_PORT" in caplog.text
    assert CANARY not in caplog.text


def test_env_reads_os_environ_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = EnvProvider("GSP_TEST_PAY_")
    monkeypatch.setenv("GSP_TEST_PAY_RETRIES", "8")
    assert provider.load(Context()).values == {"retries": 8}


def test_env_secret_field_keeps_its_text() -> None:
    layer = _env({"PAY_API_TOKEN": CANARY})
    assert layer.values == {"api_token": CANARY}
    assert CANARY not in repr(layer)


def test_env_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        EnvProvider(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        EnvProvider("P_", nested_delimiter="")


# -- files ---------------------------------------------------------------------


def _file(path: Path, **options: Any) -> Layer:
    return FileProvider(path, **options).load(Context())


def test_toml_lines_for_dotted_quoted_inline_and_array_tables(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "c.toml",
        'endpoint = "x = 1"\n'  # 1
        'db.host = "dotted"\n'  # 2
        '"retries" = 3\n'  # 3
        "labels = { a = 'b', c = \"}\" }\n"  # 4
        'tags = ["""multi\n'  # 5
        'line = not a key"""]\n'  # 6
        "[[servers]]\n"  # 7
        "name = 'a'\n"  # 8
        "[[servers]]\n"  # 9
        "name = 'b'\n",  # 10
    )
    layer = _file(path)
    assert layer.origins["$.endpoint"] == f"{path}:1"
    assert layer.origins["$.db.host"] == f"{path}:2"
    assert layer.origins["$.retries"] == f"{path}:3"
    assert layer.origins["$.labels"] == f"{path}:4"
    assert layer.origins["$.labels.a"] == f"{path}:4"
    assert layer.origins["$.tags"] == f"{path}:5"
    assert layer.origins["$.servers"] == f"{path}:7"
    assert "$.line" not in layer.origins


def test_toml_scanner_gives_up_rather_than_guess() -> None:
    assert locate_toml("a = [1,\n").exact == {}
    assert locate_toml("a = 1\n= 2\n").exact == {}
    assert locate_toml('[t]\nk = "v"\n').line(("t", "k")) == 2


def test_json_lines_with_escapes_and_nesting(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "c.json",
        '{\n  "endpoint": "a \\" b: {",\n  "tags": ["x",\n "y"],\n'
        '  "db": {\n    "host": "h",\n    "port": 1\n  },\n  "k\\u0065y": 1\n}\n',
    )
    layer = _file(path)
    assert layer.values["endpoint"] == 'a " b: {'
    assert layer.origins == {
        "$.endpoint": f"{path}:2",
        "$.tags": f"{path}:3",
        "$.db": f"{path}:5",
        "$.db.host": f"{path}:6",
        "$.db.port": f"{path}:7",
        "$.key": f"{path}:9",
    }


def test_yaml_lines_with_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "c.yaml",
        "base: &base\n  host: anchored\n  port: 1\ndb:\n  <<: *base\n  port: 2\nretries: 3\n",
    )
    layer = _file(path)
    assert layer.values["db"] == {"host": "anchored", "port": 2}
    assert layer.origins["$.db.host"] == f"{path}:2"
    assert layer.origins["$.db.port"] == f"{path}:6"
    assert layer.origins["$.retries"] == f"{path}:7"


def test_yaml_never_constructs_objects(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yml", "retries: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigInvalid) as caught:
        _file(path)
    assert caught.value.problems == (f"{path}:1: not valid YAML",)


def test_yaml_alias_bombs_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigInvalid, match="more than"):
        _file(path)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.toml", f'endpoint = "x"\ntags = [\ntoken = "{CANARY}"\n', "3: not valid TOML"),
        ("bad.json", f'{{\n"endpoint": "x",\n"api_token": "{CANARY}",\n}}', "4: not valid JSON"),
        ("bad.yaml", f"endpoint: x\napi_token: {CANARY}\n  - : [\n", "3: not valid YAML"),
    ],
)
def test_syntax_errors_name_file_and_line_and_quote_nothing(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigInvalid) as caught:
        _file(path)
    assert caught.value.problems == (f"{path}:{problem}",)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert CANARY not in "".join(traceback.format_exception(caught.value))


def test_missing_file_is_not_found_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"nowhere\.toml"):
        _file(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("big.toml", "a = 1\n" + "#" * MAX_FILE_BYTES, "larger than"),
        ("deep.json", "[" * 100 + "]" * 100, "nested deeper than"),
        ("deep.toml", "a = " + "[" * 2000 + "]" * 2000, "nested deeper than"),
        ("list.json", "[1, 2]", "the top level must be a table"),
        ("bytes.json", None, "not UTF-8"),
    ],
)
def test_unacceptable_files_are_refused(
    tmp_path: Path, name: str, text: str | None, reason: str
) -> None:
    path = tmp_path / name
    if text is None:
        path.write_bytes(b'{"a": "\xff"}')
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigInvalid, match=reason):
        _file(path)


def test_format_from_suffix_or_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="format="):
        FileProvider(tmp_path / "c.conf")
    path = _write(tmp_path, "c.conf", '{"retries": 2}')
    assert _file(path, format="json").values == {"retries": 2}
    assert (
        _by_path(merge(Payments, [FileProvider(path, format="json").load(Context())]).fields)[
            "$.retries"
        ].source
        == f"{path}:1"
    )


def test_empty_yaml_provides_nothing(tmp_path: Path) -> None:
    assert _file(_write(tmp_path, "c.yaml", "# nothing\n")).values == {}


# -- store and extensions ------------------------------------------------------


def test_store_provider_newest_given_or_never_stored() -> None:
    context = Context(stored={1: {"retries": 1}, 2: {"retries": 2}})
    assert StoreProvider().load(context) == Layer("store version 2", {"retries": 2})
    assert StoreProvider(1).load(context).source == "store version 1"
    assert StoreProvider().load(Context()).values == {}
    with pytest.raises(NotFound):
        StoreProvider(7).load(context)
    with pytest.raises(InvalidArgument):
        StoreProvider(0)


def test_extension_provider_request_and_origin() -> None:
    context = Context()
    layer = ExtensionProvider("site-defaults", request={"environment": "staging"}).load(context)
    assert context.requests[0]["environment"] == "staging"
    assert layer.values == {"endpoint": "https://pay.staging.example.com", "timeout_s": 10.0}
    assert layer.origin("$.timeout_s") == "extension site-defaults"
    with pytest.raises(InvalidArgument, match="name"):
        ExtensionProvider("site-defaults", request={"name": "other"})
