"""Persistence contributions across stores of one process (the backend registry is process-wide).

The same extension, with the same pinned code, must be able to contribute its
backend scheme from every store of a process (two namespaces, or a store
closed and opened again); another extension must not take a scheme over.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import gotstate_persist as gp
from gotstate_persist.backends import known_schemes

SOURCE = """
from gotstate_persist.backends import open_backend


def open_it(url, **options):
    return open_backend("memory://contrib-test/" + url.split("://", 1)[1], **options)


class Provider:
    name = "{name}"
    version = "1.0.0"
    category = "persistence"

    def backends(self):
        return {{"{scheme}": open_it}}
"""


def _extension(tmp_path: Path, name: str, scheme: str) -> str:
    # a file name of its own: in-process file targets are loaded under a name made from it
    source = tmp_path / f"{name}_{scheme}.py"
    source.write_text(SOURCE.format(name=name, scheme=scheme))
    return f"{source}:Provider"


def _scheme() -> str:
    return "contrib" + uuid.uuid4().hex[:12]


def test_the_same_extension_contributes_from_every_store(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    scheme = _scheme()
    target = _extension(tmp_path, "provider", scheme)
    for namespace in ("first", "second", "first"):
        with gp.open_store(
            f"sqlite:///{tmp_path / 'state.db'}", namespace=namespace, keyring=keyring
        ) as store:
            exts = store.extensions
            if not any(reg.name == "provider" for reg in exts.list()):
                exts.register(target)
            assert exts.activate("provider").active
            assert exts.get("provider").status == "active"
    assert scheme in known_schemes()
    with gp.open_store(f"{scheme}://probe", keyring=keyring) as opened:
        assert opened.keys() == []


def test_another_extension_cannot_take_a_scheme_over(
    store: gp.Store, tmp_path: Path, keyring: gp.KeyRing
) -> None:
    scheme = _scheme()
    exts = store.extensions
    exts.register(_extension(tmp_path, "owner", scheme))
    exts.activate("owner")
    exts.register(_extension(tmp_path, "intruder", scheme))
    with pytest.raises(gp.ExtensionFailed, match=f"a backend for '{scheme}' is already registered"):
        exts.activate("intruder")
    reg = exts.get("intruder")
    assert reg.status == "failed" and "could not start" in reg.reason
    assert exts.get("owner").status == "active"


def test_other_code_under_the_same_name_cannot_take_a_scheme_over(
    tmp_path: Path, keyring: gp.KeyRing
) -> None:
    scheme = _scheme()
    with gp.open_store(f"sqlite:///{tmp_path / 'a.db'}", keyring=keyring) as store:
        store.extensions.register(_extension(tmp_path, "provider", scheme))
        store.extensions.activate("provider")
    changed = tmp_path / f"provider_{scheme}_edited.py"
    changed.write_text(SOURCE.format(name="provider", scheme=scheme) + "\n# other code\n")
    with gp.open_store(f"sqlite:///{tmp_path / 'b.db'}", keyring=keyring) as store:
        store.extensions.register(f"{changed}:Provider")
        with pytest.raises(gp.ExtensionFailed, match="already registered"):
            store.extensions.activate("provider")
