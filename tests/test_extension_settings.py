"""Per-extension settings and secret grants (config.md "Per-extension isolation").

Real workers (and the in-process guard) run tests/ext_samples/settings_ext.py,
whose processors report what they were configured with through their output:
secrets only as "set or not" and a sha256, so no assertion here can print one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

import gotstate_persist as gp
from gotstate_persist._names import system_key
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.formats.extension import RegistrationRecordV1
from tests.test_golden_extension import RECORD as V1_RECORD

SAMPLE = Path(__file__).parent / "ext_samples" / "settings_ext.py"
FAST = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)
TOKEN = "CANARY-token-5f1d"
HOOK = "CANARY-webhook-9a2c"
OTHER_TOKEN = "CANARY-other-77e0"
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class _Payments(msgspec.Struct, frozen=True):
    api_token: gp.Secret = gp.Secret("")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _seen(handle: gp.ActiveExtension) -> dict[str, Any]:
    (out,) = handle.call("process", gp.EventView("look"))
    return dict(out.metadata)


def _register(exts: gp.ExtensionRegistry, cls: str, **kwargs: Any) -> gp.Registration:
    return exts.register(f"{SAMPLE}:{cls}", limits=FAST, **kwargs)


@pytest.mark.parametrize("isolation", ["worker", "in-process"])
def test_the_extension_gets_its_own_settings_and_only_granted_secrets(
    store: gp.Store, isolation: str
) -> None:
    exts = store.extensions
    reg = _register(exts, "Keeper", secrets=("api_token",), isolation=isolation)
    assert reg.has_settings and reg.secrets == ("api_token",)
    assert set(reg.secret_fields) == {"api_token", "webhook_secret"}
    assert _seen(exts.activate("keeper"))["configured"] is False  # nothing stored yet
    exts.deactivate("keeper")
    ref = exts.configure(
        "keeper",
        {"endpoint": "https://pay", "retries": 5, "api_token": TOKEN, "webhook_secret": HOOK},
        expected_version=0,
        reason="first",
    )
    assert (ref.name, ref.version, ref.reason) == ("extension/keeper", 1, "first")
    seen = _seen(exts.activate("keeper"))
    assert seen["type"] == "KeeperSettings"
    assert (seen["endpoint"], seen["retries"]) == ("https://pay", 5)
    assert seen["api_token_set"] is True
    assert seen["api_token_sha256"] == _sha(TOKEN)  # granted: in clear inside the extension
    assert seen["webhook_secret_set"] is False  # not granted: withheld ("")
    assert seen["webhook_secret_sha256"] == EMPTY_SHA


def test_settings_apply_at_the_next_activation_and_use_cas(store: gp.Store) -> None:
    exts = store.extensions
    _register(exts, "Keeper")
    exts.configure("keeper", {"endpoint": "https://a"}, expected_version=0)
    handle = exts.activate("keeper")
    assert _seen(handle)["endpoint"] == "https://a"
    with pytest.raises(gp.VersionConflict, match="at version 1, not 0"):
        exts.configure("keeper", {"endpoint": "https://b"}, expected_version=0)
    exts.configure("keeper", {"endpoint": "https://b"}, expected_version=1)
    assert _seen(handle)["endpoint"] == "https://a"  # no hot reload
    exts.deactivate("keeper")
    assert _seen(exts.activate("keeper"))["endpoint"] == "https://b"
    assert [r.version for r in store.config.history("extension/keeper")] == [1, 2]


def test_another_extensions_settings_never_reach_it(store: gp.Store) -> None:
    exts = store.extensions
    _register(exts, "Keeper", secrets=("api_token",))
    _register(exts, "Other")  # same field name api_token, not granted
    exts.configure("keeper", {"endpoint": "https://k", "api_token": TOKEN}, expected_version=0)
    store.config.define("payments", _Payments)
    store.config.put("payments", _Payments(api_token=gp.Secret(OTHER_TOKEN)), expected_version=0)
    other = _seen(exts.activate("other"))
    assert other["configured"] is False  # keeper's settings and the store's are not its own
    exts.configure("other", {"region": "us", "api_token": OTHER_TOKEN}, expected_version=0)
    exts.deactivate("other")
    other = _seen(exts.activate("other"))
    assert other["region"] == "us"
    assert other["api_token_set"] is False  # its own secret, but not granted
    keeper = _seen(exts.activate("keeper"))
    assert keeper["api_token_sha256"] == _sha(TOKEN)
    assert "region" not in keeper


def test_refused_settings_list_every_problem_without_values_and_write_nothing(
    store: gp.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exts = store.extensions
    _register(exts, "Keeper", secrets=("api_token",))
    before = store.usage()
    with pytest.raises(gp.ConfigInvalid) as caught:
        exts.configure(
            "keeper",
            {
                "retries": "CANARY-not-an-int",
                "api_token": 42,
                "bogus": TOKEN,
                "webhook_secret": HOOK,
            },
            expected_version=0,
        )
    problems = caught.value.problems
    assert any(p.startswith("$.retries:") for p in problems)
    assert any(p.startswith("$.api_token:") for p in problems)
    assert any(p.startswith("$.bogus:") and "unknown" in p for p in problems)
    assert any("endpoint" in p for p in problems)  # required, missing
    assert isinstance(caught.value, gp.InvalidArgument)
    with pytest.raises(gp.ConfigInvalid) as post_init:  # the Settings' own check, in the worker
        exts.configure("keeper", {"endpoint": "x", "retries": -1}, expected_version=0)
    assert post_init.value.problems
    assert store.usage() == before
    assert store.config.history("extension/keeper") == []
    texts = [str(caught.value), repr(caught.value), str(post_init.value), caplog.text]
    for text in texts:
        for canary in (TOKEN, HOOK, "CANARY"):
            assert canary not in text


def test_canaries_never_leak_through_reprs_errors_or_logs(
    store: gp.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exts = store.extensions
    _register(exts, "Keeper", secrets=("api_token",))
    exts.configure(
        "keeper",
        {"endpoint": "https://k", "api_token": TOKEN, "webhook_secret": HOOK},
        expected_version=0,
    )
    stored = store.config.get("extension/keeper")
    assert stored.values["api_token"].reveal() == TOKEN  # sealed in the store as a Secret
    handle = exts.activate("keeper")
    diff = store.config.diff("extension/keeper", 1, 1)
    texts = [
        repr(stored),
        str(stored),
        repr(diff),
        repr(handle),
        repr(exts.get("keeper")),
        caplog.text,
    ]
    texts.append(handle.output_tail())
    for text in texts:
        assert TOKEN not in text and HOOK not in text
    with pytest.raises(gp.InvalidArgument) as reserved:
        store.config.put("extension/keeper", {"values": {}}, expected_version=1)
    assert TOKEN not in str(reserved.value)


def test_reserved_names_are_refused_to_define_and_put(store: gp.Store) -> None:
    with pytest.raises(gp.InvalidArgument, match="extensions' settings"):
        store.config.define("extension/keeper", _Payments)
    with pytest.raises(gp.InvalidArgument, match=r"extensions\.configure"):
        store.config.put("extension/keeper", {"values": {}}, expected_version=0)
    assert store.config.history("extension/keeper") == []


def test_grants_must_name_secret_fields_of_settings(store: gp.Store) -> None:
    exts = store.extensions
    with pytest.raises(gp.ExtensionInvalid) as caught:
        _register(exts, "Keeper", secrets=("endpoint", "nope"))
    assert len(caught.value.problems) == 2
    assert all("not a field of Settings typed gp.Secret" in p for p in caught.value.problems)
    with pytest.raises(gp.ExtensionInvalid, match="declares no Settings"):
        _register(exts, "Bare", secrets=("api_token",))
    with pytest.raises(gp.ExtensionInvalid, match="list of names"):
        _register(exts, "Keeper", secrets="api_token")
    assert store.usage().records == 0


def test_an_extension_without_settings_takes_none(store: gp.Store) -> None:
    exts = store.extensions
    reg = _register(exts, "Bare")
    assert not reg.has_settings and reg.settings_fields == ()
    with pytest.raises(gp.ConfigInvalid, match="declares no Settings"):
        exts.configure("bare", {"anything": 1}, expected_version=0)
    assert store.config.history("extension/bare") == []
    with pytest.raises(gp.NotFound):
        exts.configure("missing", {}, expected_version=0)


@pytest.mark.parametrize("isolation", ["worker", "in-process"])
def test_configure_raising_is_a_start_failure(store: gp.Store, isolation: str) -> None:
    exts = store.extensions
    _register(exts, "Picky", isolation=isolation)
    exts.configure("picky", {"region": "us"}, expected_version=0)
    with pytest.raises(gp.ExtensionFailed) as caught:
        exts.activate("picky")
    assert "RuntimeError" in str(caught.value)
    assert "refuse" not in str(caught.value)  # the exception's type, never its message
    assert exts.get("picky").status == "failed"


def test_a_version_1_registration_reads_with_no_settings_and_no_grants(
    store: gp.Store, keyring: gp.KeyRing
) -> None:
    # written as a release before settings wrote it: format version 1
    pipeline = RecordPipeline(store.backend, keyring=keyring, namespace="orders")
    record = RegistrationRecordV1(
        **{f: getattr(V1_RECORD, f) for f in RegistrationRecordV1.__struct_fields__}
    )
    pipeline.append(system_key("ext", "throttle"), record, expected_version=0)
    reg = store.extensions.get("throttle")
    assert (reg.revision, reg.name, reg.version) == (1, "throttle", "1.2.3")
    assert reg.secrets == () and reg.secret_fields == () and not reg.has_settings
