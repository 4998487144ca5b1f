"""An order service whose machines persist themselves (``store.open_machine``).

Each order is a gotstate machine attached to its key: a request processes
one event and returns once the event is committed (journal append, and a
snapshot every ``SNAPSHOT_EVERY`` events). No request restores or saves by
hand; a restarted service (or a second instance on the same database) picks
the order up where it was, from the newest snapshot plus the journal.

    POST /orders/<id>/events/<name>    headers X-Actor, X-Request-Id (optional)
    GET  /orders/<id>                  the order's state and head

Run ``python examples/service/service.py --demo`` for a scripted session
(requests, a restart, the journal), or ``--port 8080`` to serve.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gotstate.core.events import Event
from order_workflow import build_order_machine

import gotstate_persist as gp

logger = logging.getLogger("order-service")

SNAPSHOT_EVERY = 10


class Orders:
    """The attached machines of this process, opened on first use."""

    def __init__(self, store: gp.Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._open: dict[str, gp.Attached] = {}

    def get(self, order_id: str) -> gp.Attached:
        with self._lock:
            attached = self._open.get(order_id)
            if attached is None:
                attached = self._store.open_machine(
                    f"order/{order_id}",
                    build_order_machine,
                    journal=True,
                    snapshot_every=SNAPSHOT_EVERY,
                )
                self._open[order_id] = attached
            return attached

    def process(self, order_id: str, event: str, meta: dict[str, Any]) -> bool:
        attached = self.get(order_id)
        try:
            return attached.process_event(Event(event), meta=meta)
        except gp.VersionConflict:
            # another instance moved the order: catch up, then try once more
            attached.recover()
            return attached.process_event(Event(event), meta=meta)

    def close(self) -> None:
        with self._lock:
            for attached in self._open.values():
                attached.detach()  # a snapshot covering the journal's tail
            self._open.clear()


def handler_for(orders: Orders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "orders" or parts[2] != "events":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "no such route"})
            meta = {"actor": self.headers.get("X-Actor", "anonymous")}
            if self.headers.get("X-Request-Id"):
                meta["request_id"] = self.headers["X-Request-Id"]
            try:
                accepted = orders.process(parts[1], parts[3], meta)
            except gp.VersionConflict as exc:
                return self._reply(HTTPStatus.CONFLICT, {"error": str(exc)})
            except gp.InvalidArgument as exc:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except gp.PersistError as exc:
                logger.error("order %s: %s", parts[1], exc)
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "storage failed"})
            self._reply(HTTPStatus.OK, {"accepted": accepted, **describe(orders.get(parts[1]))})

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] != "orders":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "no such route"})
            self._reply(HTTPStatus.OK, describe(orders.get(parts[1])))

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.info(format, *args)

    return Handler


def describe(attached: gp.Attached) -> dict[str, Any]:
    head = attached.head
    return {
        "state": attached.machine.current_state.name,
        "snapshot_version": head.snapshot_version,
        "journal_seq": head.journal_seq,
    }


def serve(store: gp.Store, port: int) -> tuple[ThreadingHTTPServer, Orders]:
    orders = Orders(store)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(orders))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, orders


def post(port: int, path: str, actor: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method="POST", headers={"X-Actor": actor}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.loads(exc.read())}


def demo(directory: Path) -> None:
    url = f"sqlite:///{directory / 'orders.db'}"
    keys_file = directory / "keys.json"
    if not keys_file.exists():
        keys_file.write_text(gp.KeyRing.generate().export())
    keys = gp.KeyRing.load(keys_file.read_text())
    script = [("start", "web"), ("checkout", "web"), ("refund", "web"), ("pay", "payments")]
    with gp.open_store(url, keyring=keys) as store:
        server, orders = serve(store, 0)
        port = server.server_address[1]
        for event, actor in script:
            print(f"POST {event:<9} -> {post(port, f'/orders/42/events/{event}', actor)}")
        server.shutdown()
        orders.close()
    print("-- service restarted --")
    with gp.open_store(url, keyring=keys) as store:
        server, orders = serve(store, 0)
        port = server.server_address[1]
        print(f"POST pack      -> {post(port, '/orders/42/events/pack', 'warehouse')}")
        server.shutdown()
        orders.close()
        for entry in store.journal("order/42"):
            actor = entry.meta.get("actor")
            print(
                f"journal {entry.seq}: {entry.event.name:<9} {entry.source} -> {entry.target}"
                f"  by {actor}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where the store and its keyring live")
    parser.add_argument("--demo", action="store_true", help="run a scripted session and exit")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.demo:
        if args.dir is not None:
            args.dir.mkdir(parents=True, exist_ok=True)
            demo(args.dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                demo(Path(tmp))
        return
    directory = args.dir or Path.cwd()
    keys_file = directory / "keys.json"
    if not keys_file.exists():
        keys_file.write_text(gp.KeyRing.generate().export())
    keys = gp.KeyRing.load(keys_file.read_text())
    with gp.open_store(f"sqlite:///{directory / 'orders.db'}", keyring=keys) as store:
        server, orders = serve(store, args.port)
        print(f"serving on http://127.0.0.1:{server.server_address[1]} (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.shutdown()
            orders.close()


if __name__ == "__main__":
    main()
