"""``store.config``: define, put (CAS, validation), get, history, diff, rollback, transactions.

Every refusal is checked to leave every stored byte identical; secrets are
checked with a canary that must never appear in any output.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from _places import Place, make_place

import gotstate_persist as gp
from gotstate_persist import rules

CANARY = "canary-7f3a9c-secret"


class Payments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    timeout_s: float = 2.0
    mode: Literal["live", "test"] = "live"
    api_token: gp.Secret = gp.Secret("")


class Shipping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    carrier: str
    max_parcels: int = 10


def https_only(candidate: Payments, previous: Payments | None) -> list[str]:
    return [] if candidate.endpoint.startswith("https://") else ["$.endpoint: must use https"]


def never_shorter_timeout(candidate: Payments, previous: Payments | None) -> list[str]:
    if previous is not None and candidate.timeout_s < previous.timeout_s / 10:
        return ["$.timeout_s: must not drop below a tenth of the previous timeout"]
    return []


@pytest.fixture(params=["sqlite", "postgresql", "file", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    return make_place(request.param, request, tmp_path, database="config.db", cls=Place)


def _open(place: Place, keyring: gp.KeyRing) -> gp.Store:
    return gp.open_store(place.url, namespace="orders", keyring=keyring, **place.options)


def _define(cfg: Any) -> None:
    cfg.define("payments", Payments, validators=[https_only, never_shorter_timeout])
    cfg.define("shipping", Shipping, validators=[rules.in_range("$.max_parcels", min=1, max=50)])


def _no_canary(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text


def test_put_get_history_diff_on_every_backend(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        cfg = store.config
        _define(cfg)
        first = cfg.put(
            "payments",
            Payments("https://pay", api_token=gp.Secret(CANARY)),
            expected_version=0,
            reason="initial",
        )
        assert (first.name, first.version, first.reason) == ("payments", 1, "initial")
        cfg.put("payments", {"endpoint": "https://pay2", "timeout_s": 3}, expected_version=1)
        assert cfg.get("payments") == Payments("https://pay2", timeout_s=3.0)
        assert cfg.get("payments", version=1).api_token.reveal() == CANARY
        assert [ref.version for ref in cfg.history("payments")] == [1, 2]
        changes = cfg.diff("payments", 1, 2)
        assert {change.path for change in changes} == {"$.endpoint", "$.timeout_s", "$.api_token"}
        _no_canary(repr(changes), str(changes))
        assert store.keys() == []
        assert cfg.names() == ["payments"]
        # another process (a fresh store) reads the same
    with _open(place, keyring) as again:
        _define(again.config)
        assert again.config.get("payments") == Payments("https://pay2", timeout_s=3.0)


def test_refusals_list_every_problem_and_write_nothing(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        cfg = store.config
        _define(cfg)
        cfg.put("payments", Payments("https://pay", timeout_s=10.0), expected_version=0)
        before = place.snapshot()
        with pytest.raises(gp.ConfigInvalid) as caught:
            cfg.put(
                "payments",
                {"endpoint": "http://" + CANARY, "timeout_s": 0.5, "api_token": CANARY},
                expected_version=1,
            )
        assert caught.value.problems == (
            "$.endpoint: must use https",
            "$.timeout_s: must not drop below a tenth of the previous timeout",
        )
        with pytest.raises(gp.ConfigInvalid) as schema:
            cfg.put(
                "payments",
                {"endpoint": 5, "timeout_s": "slow", "mode": CANARY, "extra": CANARY},
                expected_version=1,
            )
        paths = sorted(problem.split(":")[0] for problem in schema.value.problems)
        assert paths == ["$.endpoint", "$.extra", "$.mode", "$.timeout_s"]
        for exc in (caught.value, schema.value):
            assert isinstance(exc, gp.InvalidArgument)
            _no_canary(str(exc), repr(exc), "".join(traceback.format_exception(exc)))
        with pytest.raises(gp.VersionConflict):
            cfg.put("payments", Payments("https://other"), expected_version=0)
        assert place.snapshot() == before


def test_expected_version_is_required(store: gp.Store) -> None:
    store.config.define("shipping", Shipping)
    with pytest.raises(TypeError):
        store.config.put("shipping", Shipping("dhl"))  # type: ignore[call-arg]


def test_definitions_are_checked_at_once(store: gp.Store) -> None:
    class Leaky(msgspec.Struct):
        db_password: str

    class LeakyCamel(msgspec.Struct):
        apiToken: str

    class Fine(msgspec.Struct):
        max_tokens: int
        tokenizer: str
        db_password: gp.Secret

    cfg = store.config
    for schema in (Leaky, LeakyCamel):
        with pytest.raises(gp.InvalidArgument, match="Secret"):
            cfg.define("leaky", schema)
    cfg.define("fine", Fine)
    cfg.define("fine", Fine)  # idempotent
    with pytest.raises(gp.InvalidArgument, match="already defined"):
        cfg.define("fine", Shipping)
    with pytest.raises(gp.InvalidArgument, match="define"):
        cfg.get("undefined")


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
def test_secrets_need_an_encrypting_keyring(tmp_path: Path, algorithm: str) -> None:
    signing = gp.KeyRing.generate(algorithm)
    with gp.open_store(f"sqlite:///{tmp_path / 's.db'}", keyring=signing) as store:
        with pytest.raises(gp.InvalidArgument, match="encrypt"):
            store.config.define("payments", Payments)
        store.config.define("shipping", Shipping)  # no secrets: fine
        store.config.put("shipping", Shipping("dhl"), expected_version=0)


def test_secrets_are_stored_encrypted_only(tmp_path: Path, keyring: gp.KeyRing) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with gp.open_store(url, keyring=keyring) as store:
        store.config.define("payments", Payments)
        store.config.put(
            "payments", Payments("https://p", api_token=gp.Secret(CANARY)), expected_version=0
        )
    raw = (tmp_path / "s.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("s.db-*")
    )
    assert CANARY.encode() not in raw


def test_transaction_commits_all_or_nothing(place: Place, keyring: gp.KeyRing) -> None:
    with _open(place, keyring) as store:
        cfg = store.config
        _define(cfg)
        with cfg.transaction() as tx:
            tx.put("payments", Payments("https://a"), expected_version=0)
            tx.put("shipping", Shipping("dhl"), expected_version=0)
        assert [ref.version for ref in tx.refs] == [1, 1]
        before = place.snapshot()
        with pytest.raises(gp.ConfigInvalid) as caught, cfg.transaction() as tx:
            tx.put("payments", Payments("https://b"), expected_version=1)
            tx.put("shipping", Shipping("dhl", max_parcels=500), expected_version=1)
        assert caught.value.problems[0].startswith("shipping: $.max_parcels")
        with pytest.raises(gp.VersionConflict), cfg.transaction() as tx:
            tx.put("payments", Payments("https://b"), expected_version=1)
            tx.put("shipping", Shipping("ups"), expected_version=0)
        with pytest.raises(RuntimeError), cfg.transaction() as tx:
            tx.put("payments", Payments("https://b"), expected_version=1)
            raise RuntimeError("the caller changed its mind")
        assert place.snapshot() == before
        assert cfg.get_many(["payments", "shipping"]) == {
            "payments": Payments("https://a"),
            "shipping": Shipping("dhl"),
        }


def test_rollback_writes_a_new_validated_version(store: gp.Store) -> None:
    cfg = store.config
    _define(cfg)
    cfg.put("payments", Payments("https://a", timeout_s=50.0), expected_version=0)
    cfg.put("payments", Payments("https://b", timeout_s=60.0), expected_version=1)
    ref = cfg.rollback("payments", to=1, expected_version=2)
    assert (ref.version, ref.reason) == (3, "rollback to version 1")
    assert cfg.get("payments") == Payments("https://a", timeout_s=50.0)
    cfg.put("payments", Payments("https://c", timeout_s=600.0), expected_version=3)
    with pytest.raises(gp.ConfigInvalid, match="tenth"):
        cfg.rollback("payments", to=1, expected_version=4)  # 50 < 600 / 10: refused now
    assert len(cfg.history("payments")) == 4


def test_upcast_reads_old_versions_as_the_newest_schema(store: gp.Store) -> None:
    class ShippingV2(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        carriers: list[str]
        max_parcels: int = 10

    store.config.define("shipping", Shipping)
    store.config.put("shipping", Shipping("dhl", 5), expected_version=0)
    store.config.define(
        "shipping",
        ShippingV2,
        version=2,
        upcast=lambda old: {"carriers": [old["carrier"]], "max_parcels": old["max_parcels"]},
    )
    assert store.config.get("shipping") == ShippingV2(["dhl"], 5)
    store.config.put("shipping", ShippingV2(["dhl", "ups"]), expected_version=1)
    assert store.config.get("shipping", version=1) == ShippingV2(["dhl"], 5)


def test_retention_follows_the_quota(tmp_path: Path, keyring: gp.KeyRing) -> None:
    quota = gp.Quota(max_versions_per_key=2, retention="prune-oldest")
    with gp.open_store(f"sqlite:///{tmp_path / 's.db'}", keyring=keyring, quota=quota) as store:
        store.config.define("shipping", Shipping)
        for version in range(4):
            store.config.put("shipping", Shipping(f"c{version}"), expected_version=version)
        assert [ref.version for ref in store.config.history("shipping")] == [3, 4]
        with pytest.raises(gp.NotFound):
            store.config.get("shipping", version=1)


def test_nothing_secret_reaches_logs_or_reprs(
    store: gp.Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = store.config

    def raises(candidate: Payments, previous: Payments | None) -> list[str]:
        raise ValueError(f"bad token {candidate.api_token.reveal()}")

    def echoes(candidate: Payments, previous: Payments | None) -> list[str]:
        return [f"$.api_token: {candidate.api_token.reveal()} is weak"]

    cfg.define("payments", Payments, validators=[raises, echoes])
    value = Payments("https://p", api_token=gp.Secret(CANARY))
    with pytest.raises(gp.ConfigInvalid) as caught:
        cfg.put("payments", value, expected_version=0)
    assert len(caught.value.problems) == 2
    _no_canary(
        repr(value),
        str(value),
        f"{value.api_token}",
        "".join(traceback.format_exception(caught.value)),
        caplog.text,
        repr(cfg),
    )


# Four processes racing put with CAS lose no update.


class Counter(msgspec.Struct, frozen=True):
    count: int


def _racer(url: str, keys_text: str, options: dict[str, Any], rounds: int, barrier: Any) -> None:
    with gp.open_store(url, keyring=gp.KeyRing.load(keys_text), **options) as store:
        cfg = store.config
        cfg.define("counter", Counter)
        barrier.wait(timeout=60)
        done = 0
        while done < rounds:
            version, current = cfg.current("counter")
            try:
                cfg.put("counter", Counter(current.count + 1), expected_version=version)
            except gp.VersionConflict:
                continue
            done += 1


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "file"])
def test_four_processes_racing_put_lose_no_update(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, keyring: gp.KeyRing
) -> None:
    where = make_place(kind, request, tmp_path, database="race.db", cls=Place)
    with gp.open_store(where.url, keyring=keyring, **where.options) as store:
        store.config.define("counter", Counter)
        store.config.put("counter", Counter(0), expected_version=0)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    rounds = 10
    workers = [
        context.Process(
            target=_racer, args=(where.url, keyring.export(), where.options, rounds, barrier)
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    with gp.open_store(where.url, keyring=keyring, **where.options) as store:
        store.config.define("counter", Counter)
        assert store.config.get("counter") == Counter(4 * rounds)
        assert [ref.version for ref in store.config.history("counter")] == list(
            range(1, 4 * rounds + 2)
        )


def test_validators_quoting_secrets_are_scrubbed_for_mappings_and_previous(
    store: gp.Store,
) -> None:
    cfg = store.config

    def echoes(candidate: Payments, previous: Payments | None) -> list[str]:
        problems = [f"$.api_token: {candidate.api_token.reveal()} is weak"]
        if previous is not None:
            problems.append(f"$.api_token: was {previous.api_token.reveal()}")
        return problems

    cfg.define("payments", Payments)
    cfg.put(
        "payments", Payments("https://p", api_token=gp.Secret(CANARY + "-old")), expected_version=0
    )
    cfg.define("payments", Payments, validators=[echoes])
    with pytest.raises(gp.ConfigInvalid) as caught:
        cfg.put("payments", {"endpoint": "https://p", "api_token": CANARY}, expected_version=1)
    assert len(caught.value.problems) == 2
    _no_canary(str(caught.value), "".join(traceback.format_exception(caught.value)))
