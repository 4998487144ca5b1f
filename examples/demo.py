"""The `make demo` walk-through: save an order machine, restart, restore, continue.

Run as two separate processes to show that nothing but the database file and
the exported keyring survive between them::

    python examples/demo.py save --url sqlite:///.gotstate/demo.db --keys keys.json
    python examples/demo.py restore --url sqlite:///.gotstate/demo.db --keys keys.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gotstate.core.events import Event

import gotstate_persist as gp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_workflow import build_order_machine, get_data, set_data

log = logging.getLogger("demo")
KEY = "order-42"
NAMESPACE = "orders"


def save(url: str, keys: gp.KeyRing) -> None:
    machine = build_order_machine()
    machine.start()
    for name in ("start", "checkout"):
        machine.process_event(Event(name))
    set_data(machine, "cart", "items", (("sku-1", 2), ("sku-7", 1)))
    set_data(machine, "payment", "total", Decimal("59.90"))
    set_data(machine, "payment", "due", datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    log.info("process 1: order is in state %r", machine.current_state.name)
    with gp.open_store(url, namespace=NAMESPACE, keyring=keys) as store:
        ref = store.save_machine(KEY, machine)
        log.info("saved %s version %d (%d bytes sealed)", ref.key, ref.version, ref.size)


def restore(url: str, keys: gp.KeyRing) -> None:
    fresh = build_order_machine()  # same structure, built anew, never started
    with gp.open_store(url, namespace=NAMESPACE, keyring=keys) as store:
        ref = store.restore_machine(KEY, fresh)
        log.info(
            "process 2: restored version %d: state %r, payment data %r",
            ref.version,
            fresh.current_state.name,
            get_data(fresh, "payment"),
        )
        for name in ("pay", "pack", "ship"):
            fresh.process_event(Event(name))
            log.info("  event %-5s -> %s", name, fresh.current_state.name)
        ref = store.save_machine(KEY, fresh, expected_version=ref.version)
        log.info(
            "saved version %d; versions stored: %s",
            ref.version,
            [r.version for r in store.versions(KEY)],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=("save", "restore"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", required=True, help="exported keyring file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keys = gp.KeyRing.load(Path(args.keys).read_text(encoding="utf-8"))
    (save if args.step == "save" else restore)(args.url, keys)


if __name__ == "__main__":
    main()
