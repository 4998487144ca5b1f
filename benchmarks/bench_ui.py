"""The inspector's keys page on 100,000 keys vs the backend's plain key listing, in one run.

Run with ``.venv/bin/python benchmarks/bench_ui.py [--keys N] [--rounds N] [--quick]``.

A SQLite store holds ``--keys`` keys (100,000 by default; one sealed record
each, written in batches through ``Backend.put_many``). Side by side,
interleaved round by round (who goes first rotates), medians over rounds:

1. ``GET /api/keys?ns=...&page=P`` (50 keys, their version counts, sizes,
   kinds), a page in the middle of the listing, through the real
   application in process (Starlette's TestClient, token checked), vs
   ``backend.keys(namespace)``, the one listing call the page builds on.
2. The same with a search (``q=``: a prefix matching one page of keys).

The ratio is page time / listing time (``x time``): what showing a page adds
to listing the names. It stays a small constant as the store grows, because
only the page's keys have their versions read. No target; stated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import figure  # noqa: E402
from bench_backends import interleaved  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import gotstate_persist as gp  # noqa: E402
from gotstate_persist._pipeline import RecordPipeline  # noqa: E402
from gotstate_persist.backends import open_backend  # noqa: E402
from gotstate_persist.backends.base import NewVersion  # noqa: E402
from gotstate_persist.ui import Inspector, ReadOnlyBackend, create_app  # noqa: E402

NAMESPACE = "bench"
TOKEN = "bench-token"
BATCH = 2_000
HOW = (
    "GET /api/keys{} (in process through the app) vs backend.keys(namespace), SQLite, "
    "interleaved rounds, median; page time / listing time"
)


class Item(msgspec.Struct, frozen=True):
    n: int
    note: str


def fill(url: str, count: int) -> None:
    formats = gp.FormatRegistry()
    formats.register(Item, kind="bench.item")
    keyring = gp.KeyRing.generate()
    with open_backend(url) as backend:
        pipeline = RecordPipeline(backend, keyring=keyring, namespace=NAMESPACE, formats=formats)
        now = int(time.time() * 1_000_000)
        for start in range(0, count, BATCH):
            items = []
            for n in range(start, min(start + BATCH, count)):
                key = f"key-{n:07d}"
                encoded = pipeline.encode(Item(n, "x" * 40))
                blob = pipeline.seal(encoded.payload, key=key, version=1)
                items.append(
                    NewVersion(key, 1, blob, encoded.kind, encoded.format_version, now + n)
                )
            backend.put_many(NAMESPACE, items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10,000 keys, 3 rounds")
    args = parser.parse_args()
    count, rounds = (10_000, 3) if args.quick else (args.keys, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'ui.db'}"
        started = time.perf_counter()
        fill(url, count)
        print(f"filled {count:,} keys in {time.perf_counter() - started:.1f} s")
        backend = ReadOnlyBackend(open_backend(url, create=False))
        app = create_app(Inspector.of(backend, url), TOKEN)
        with backend, TestClient(app) as client:
            middle = count // 50 // 2 or 1

            def page(params: dict[str, object]) -> object:
                answer = client.get("/api/keys", params={**params, "token": TOKEN})
                assert answer.status_code == 200 and len(answer.json()["keys"]) > 0
                return answer

            def listing() -> object:
                return backend.keys(NAMESPACE)

            search = f"key-{count // 2:07d}"[:-2]  # 100 keys share it: two pages
            for name, params, what in (
                ("keys page", {"ns": NAMESPACE, "page": middle}, "?page= (50 keys, mid-list)"),
                ("keys search", {"ns": NAMESPACE, "q": search}, "?q= (a prefix of 100 keys)"),
            ):
                ours, base = interleaved(
                    [lambda _r, p=params: lambda: page(p), lambda _r: listing], rounds, 3
                )
                ratio = ours / base
                figure(
                    "Inspector",
                    f"{name}, {count:,} keys",
                    ratio,
                    "x time",
                    detail=f"{ours * 1000:.1f} ms vs listing {base * 1000:.1f} ms",
                    how=HOW.format(what),
                    line=(
                        f"{name} ({count:,} keys): {ours * 1000:.1f} ms, "
                        f"plain listing {base * 1000:.1f} ms, {ratio:.2f}x time"
                    ),
                )


if __name__ == "__main__":
    main()
