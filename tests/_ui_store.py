"""A populated store for the inspector's tests: machines with journals, many keys, a config.

Planted canaries must never reach a browser: a configuration ``Secret`` and
the password in the store URL. State data is shown by design (it is what
the inspector is for), so no canary lives there.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from gotstate.core.events import Event
from machines import build_composite_machine
from order_workflow import build_order_machine, set_data

import gotstate_persist as gp

NAMESPACE = "orders"
BULK = "bulk"
#: A composite machine with a submachine, left in the submachine's first state.
FLOWS = "flows"
FLOW_KEY = "review-1"
KEY = "order-42"
#: A key whose name is markup: every page must show it as text.
HOSTILE_KEY = "<b>bold</b>&\"quote'"
BULK_KEYS = [f"bulk-{index:03d}" for index in range(120)]
CONFIG_CANARY = "cnry-ui-config-Zq81"
#: A store URL's password: SQLite refuses one, so tests give the inspector this URL
#: to show for the SQLite backend they open (PostgreSQL URLs carry passwords).
URL_CANARY = "cnry-ui-urlpw-Wm52"
SHOWN_URL = f"postgresql://inspector:{URL_CANARY}@db.example/state"
#: (event, actor): leaves the order in ``picking`` inside ``fulfilment``,
#: with ``checkout`` remembering ``payment``.
EVENTS = [("start", "api"), ("checkout", "web"), ("pay", "api")]
SLOW = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)
THROTTLE = f"{Path(__file__).parent / 'ext_samples' / 'throttle.py'}:Throttle"


class Payments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    api_token: gp.Secret = gp.Secret("")
    retries: int = 3


class Coupon(msgspec.Struct, frozen=True):
    """An application Struct in state data: undecodable without the application's formats."""

    code: str
    percent: int


class Invoice(msgspec.Struct, frozen=True):
    """An application record (not a machine snapshot)."""

    number: int
    total: Decimal


INVOICE_KEY = "invoice-7"


def formats() -> gp.FormatRegistry:
    """The application's formats (what ``ui --formats tests._ui_store:formats`` loads)."""
    registry = gp.FormatRegistry()
    registry.register(Coupon, kind="shop.coupon")
    registry.register(Invoice, kind="shop.invoice")
    return registry


@dataclass(frozen=True)
class UiStore:
    url: str
    path: Path
    keys: Path


def populate(tmp_path: Path, *, extension: bool = False, url: str | None = None) -> UiStore:
    """The store at ``url`` (default: a new SQLite file in ``tmp_path``), populated."""
    path = tmp_path / "inspected.db"
    url = url or f"sqlite:///{path}"
    keyring = gp.KeyRing.generate()
    keys = tmp_path / "keys.json"
    keys.write_text(keyring.export(), encoding="utf-8")
    with gp.open_store(url, namespace=NAMESPACE, keyring=keyring, formats=formats()) as store:
        attached = store.open_machine(KEY, build_order_machine, journal=True, snapshot_every=2)
        machine = attached.machine
        set_data(machine, "cart", "total", Decimal("19.99"))
        set_data(machine, "cart", "items", (("sku-1", 2),))
        set_data(machine, "cart", "coupon", Coupon("SPRING", 10))
        for name, actor in EVENTS:
            if name == "pay":
                set_data(machine, "cart", "total", Decimal("24.50"))
            meta: dict[str, Any] = {"actor": actor}
            assert attached.process_event(Event(name), meta=meta)
        attached.detach()
        hostile = build_order_machine()
        hostile.start()
        store.save_machine(HOSTILE_KEY, hostile)
        store.save(INVOICE_KEY, Invoice(7, Decimal("24.50")))
        store.config.define("payments", Payments)
        store.config.put(
            "payments",
            Payments("https://pay.example", api_token=gp.Secret(CONFIG_CANARY)),
            expected_version=0,
            reason="first",
        )
        store.config.put(
            "payments",
            Payments("https://pay.example", api_token=gp.Secret(CONFIG_CANARY + "2"), retries=5),
            expected_version=1,
            reason="more retries",
        )
        if extension:  # registered, activated, called once, deactivated: stats persisted
            store.extensions.register(THROTTLE, limits=SLOW)
            handle = store.extensions.activate("throttle")
            handle.call("process", gp.EventView("next"))
            store.extensions.deactivate("throttle", timeout=5)
    with gp.open_store(url, namespace=FLOWS, keyring=keyring) as store:
        flow = build_composite_machine()
        flow.start()
        for name in ("go", "next", "next"):
            flow.process_event(Event(name))
        store.save_machine(FLOW_KEY, flow)
    with gp.open_store(url, namespace=BULK, keyring=keyring) as store:
        idle = build_order_machine()
        for key in BULK_KEYS:
            store.save_machine(key, idle)
    return UiStore(url, path, keys)
