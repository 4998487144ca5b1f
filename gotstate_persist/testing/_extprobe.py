"""The fresh-process half of :class:`~gotstate_persist.testing.ExtensionTests`.

Two checks of the conformance suite need a Python process that has never
seen the extension: that registering and listing import none of its code
(the test process may well have imported it already), and which backend
schemes an activation contributes (schemes are registered for the life of a
process, so only a fresh one shows exactly what one activation added).

The suite runs this file as a script (``python _extprobe.py``), never as
part of the ``gotstate_persist.testing`` package, so that the pytest plugin
is not imported here. The request comes as JSON on stdin: ``sys_path`` (the
test process's, so the same code is found), ``mode`` (``"listing"`` or
``"schemes"``), ``url`` (a file URL of a SQLite database to open),
``target``, ``limits`` (JSON of a ``ResourceLimits`` or null), ``isolation``,
``url_template`` and ``out`` (where to write the JSON answer: the extension
may print to stdout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _loaded_files() -> dict[str, str]:
    """Module name -> resolved file of every loaded module that has one."""
    found = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            found[name] = str(Path(file).resolve())
    return found


def _listing(store: Any, registration: Any) -> dict[str, Any]:
    store.extensions.list()
    store.extensions.get(registration.name)
    store.extensions.history(registration.name)
    return {"name": registration.name}


def _schemes(store: Any, registration: Any, template: str) -> dict[str, Any]:
    import msgspec

    from gotstate_persist import FormatRegistry, KeyRing, open_store
    from gotstate_persist.backends import known_schemes

    class Probe(msgspec.Struct, frozen=True):
        text: str

    formats = FormatRegistry()
    formats.register(Probe, kind="conformance.probe", version=1)
    before = set(known_schemes())
    store.extensions.activate(registration.name)
    added = sorted(set(known_schemes()) - before)
    usable = {}
    for scheme in added:
        url = template.format(scheme=scheme)
        with open_store(url, keyring=KeyRing.generate(), formats=formats) as other:
            probe = Probe(f"written through {scheme}://")
            ref = other.save("conformance-probe", probe)
            loaded = other.load("conformance-probe")
            usable[scheme] = ref.version == 1 and loaded == probe
    store.extensions.deactivate(registration.name, timeout=5.0)
    return {"schemes": added, "usable": usable}


def main() -> None:
    request = json.loads(sys.stdin.read())
    sys.path[:] = request["sys_path"]
    import msgspec

    import gotstate_persist as gp

    limits = request["limits"]
    keyring = gp.KeyRing.generate()
    with gp.open_store(request["url"], namespace="conformance", keyring=keyring) as store:
        before = set(sys.modules)
        registration = store.extensions.register(
            request["target"],
            limits=None if limits is None else msgspec.json.decode(limits, type=gp.ResourceLimits),
            isolation=request["isolation"],
        )
        if request["mode"] == "listing":
            answer = _listing(store, registration)
            files = _loaded_files()
            answer["new_modules"] = sorted(set(sys.modules) - before)
            answer["new_files"] = sorted(
                files[name] for name in answer["new_modules"] if name in files
            )
        else:
            answer = _schemes(store, registration, request["url_template"])
    Path(request["out"]).write_text(json.dumps(answer))


if __name__ == "__main__":
    main()
