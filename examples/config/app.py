"""A small application configured through gotstate-persist's ``store.config``.

It defines two configurations with validators, resolves ``payments`` from
the stored baseline, the deployed TOML file and the environment, prints
where every value came from (the token redacted), refuses a bad change,
commits both configurations in one transaction, and follows the live
``payments`` value in a thread while an operator's change lands.

    python examples/config/app.py [--dir DIR] [--toml PATH]

Everything is written under ``--dir`` (a fresh temporary directory when
left out): the SQLite store and, on the first run, its keyring. Running it
again on the same directory continues from what is stored. The API token
comes from ``PAY_API_TOKEN``; when that is unset a random one is made up.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import secrets
import tempfile
import threading
from pathlib import Path

import msgspec

import gotstate_persist as gp

#: The environment variables of ``payments`` start with this.
ENV_PREFIX = "PAY_"
#: How long to wait for the live value to follow a change (it is much faster).
LIVE_WAIT_S = 30.0
HERE = Path(__file__).resolve().parent


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_amount_eur: int = 1000
    daily_count: int = 500


class Payments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    timeout_s: float = 2.0
    retries: int = 3
    limits: Limits = Limits()
    api_token: gp.Secret = gp.Secret("")  # the name says credential: it must be a Secret


class Shipping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    carrier: str
    max_parcels: int = 10


def https_only(candidate: Payments, previous: Payments | None) -> list[str]:
    """Payments go to an https endpoint (a problem names the path, never the value)."""
    return [] if candidate.endpoint.startswith("https://") else ["$.endpoint: must use https"]


def no_sudden_limit_jump(candidate: Payments, previous: Payments | None) -> list[str]:
    """The amount limit grows at most tenfold per change (``previous`` is None at first)."""
    if (
        previous is not None
        and candidate.limits.max_amount_eur > 10 * previous.limits.max_amount_eur
    ):
        return ["$.limits.max_amount_eur: may grow at most tenfold in one change"]
    return []


def define(cfg: gp.ConfigStore) -> None:
    """Every process that uses the configurations defines them (writes nothing)."""
    cfg.define(
        "payments",
        Payments,
        validators=[
            https_only,
            no_sudden_limit_jump,
            gp.rules.in_range("$.timeout_s", min=0.1, max=30),
            gp.rules.in_range("$.retries", min=0, max=10),
            gp.rules.matches("$.api_token", r"[A-Za-z0-9_-]{8,}"),  # checked, never shown
        ],
    )
    cfg.define(
        "shipping",
        Shipping,
        validators=[
            gp.rules.one_of("$.carrier", ["dhl", "ups", "post"]),
            gp.rules.cross_field(
                lambda s: s.carrier != "post" or s.max_parcels <= 5,
                paths=["$.carrier", "$.max_parcels"],
                message="the post takes at most 5 parcels",
            ),
        ],
    )


def keyring(directory: Path) -> gp.KeyRing:
    """The keyring kept next to the store (an example: keep real keys somewhere safe)."""
    path = directory / "keys.json"
    if path.exists():
        return gp.KeyRing.load(path.read_text(encoding="utf-8"))
    keys = gp.KeyRing.generate()  # aes-256-gcm: secrets need a keyring that encrypts
    path.touch(mode=0o600)
    path.write_text(keys.export(), encoding="utf-8")
    return keys


def seed(cfg: gp.ConfigStore) -> None:
    """Store a first version of each configuration, unless one exists."""
    if not cfg.history("payments"):
        cfg.put(
            "payments",
            {"endpoint": "https://pay.example", "api_token": os.environ[f"{ENV_PREFIX}API_TOKEN"]},
            expected_version=0,
            reason="baseline",
        )
    if not cfg.history("shipping"):
        cfg.put("shipping", Shipping("dhl"), expected_version=0, reason="baseline")


def show_explain(cfg: gp.ConfigStore, providers: list[object]) -> None:
    print("payments, resolved (lowest precedence first: store, file, environment):")
    for field in cfg.explain("payments", providers=providers):
        overrode = f" (overrode {', '.join(field.overridden)})" if field.overridden else ""
        print(f"  {field.path} = {field.value!r} from {field.source}{overrode}")


def refuse_a_bad_change(cfg: gp.ConfigStore) -> None:
    version, current = cfg.current("payments")
    bad = msgspec.structs.replace(current, endpoint="http://pay.example", retries=99)
    try:
        cfg.put("payments", bad, expected_version=version)
    except gp.ConfigInvalid as refused:
        print(f"refused, nothing written: {'; '.join(refused.problems)}")


def commit_together(cfg: gp.ConfigStore, resolved: Payments) -> None:
    """The resolved payments and a carrier switch, all or nothing."""
    payments_version, _ = cfg.current("payments")
    shipping_version, shipping = cfg.current("shipping")
    carrier = "ups" if shipping.carrier == "dhl" else "dhl"
    with cfg.transaction() as tx:
        tx.put("payments", resolved, expected_version=payments_version, reason="deploy")
        tx.put(
            "shipping",
            msgspec.structs.replace(shipping, carrier=carrier),
            expected_version=shipping_version,
            reason="deploy",
        )
    print("committed together: " + ", ".join(f"{r.name} v{r.version}" for r in tx.refs))
    for change in cfg.diff("payments", payments_version, payments_version + 1):
        print(f"  {change.path}: {change.old!r} -> {change.new!r}")


def follow_live(cfg: gp.ConfigStore) -> None:
    """A live value follows in its thread while an operator's put lands from another."""
    seen: queue.Queue[tuple[float, float]] = queue.Queue()
    with cfg.live("payments") as live:
        print(f"live: version {live.version}, timeout_s {live.value.timeout_s}")
        live.subscribe(lambda new, old: seen.put((old.timeout_s, new.timeout_s)))

        def operator() -> None:
            version, current = cfg.current("payments")
            slower = msgspec.structs.replace(current, timeout_s=current.timeout_s + 1)
            cfg.put("payments", slower, expected_version=version, reason="provider is slow")

        thread = threading.Thread(target=operator, name="operator")
        thread.start()
        thread.join()
        old, new = seen.get(timeout=LIVE_WAIT_S)
        print(f"live: version {live.version}, timeout_s {old} -> {new}")


def run(directory: Path, toml: Path) -> None:
    os.environ.setdefault(f"{ENV_PREFIX}API_TOKEN", secrets.token_urlsafe(16))
    url = f"sqlite:///{directory / 'config.db'}"
    with gp.open_store(url, namespace="shop", keyring=keyring(directory)) as store:
        cfg = store.config
        define(cfg)
        seed(cfg)
        providers: list[object] = [
            gp.StoreProvider(),
            gp.FileProvider(toml),
            gp.EnvProvider(ENV_PREFIX),
        ]
        resolved = cfg.resolve("payments", providers=providers)  # validated like a put
        show_explain(cfg, providers)
        refuse_a_bad_change(cfg)
        commit_together(cfg, resolved)
        follow_live(cfg)
        history = ", ".join(f"v{r.version} {r.reason}" for r in cfg.history("payments"))
        print(f"payments history: {history}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where to keep the store (default: a temp dir)")
    parser.add_argument("--toml", type=Path, default=HERE / "payments.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    directory = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="config-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"store in {directory}")
    run(directory, args.toml)


if __name__ == "__main__":
    main()
