"""One opened object-store prefix: what the plain backend and a catalog over it share.

Both :class:`~.objectstore.ObjectStoreBackend` and the catalog
(``backends.catalog``) keep their objects below one prefix of one storage,
and must treat it alike: opened once (the URL's protocol picks a driver),
named the same way in every message, its errors mapped at one boundary, and
its layout marker (:mod:`._layout`) checked at open and written before the
first write. :class:`ObjectPrefix` owns exactly that; the backends own it
(composition) and write their own objects through :attr:`ObjectPrefix.objects`.

Storage options (credentials, ``endpoint_url``, ...) go to fsspec only: they
are kept out of ``repr``, logs and error messages, which name the protocol and
root path alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .._redact import mask_url, option_secrets, safe_cause, scrub, url_secrets
from ..errors import BackendError, InvalidArgument, PersistError
from ._entrynames import MAX_ENTRY_PATH_BYTES
from ._fsspec_objects import FsspecObjects, MemoryObjects
from ._layout import (
    LAYOUT_OBJECT,
    MAX_LAYOUT_BYTES,
    OBJECT_LAYOUT_2,
    Layout,
    another_catalog,
    check_layout,
    decode_layout,
    encode_layout,
    layout_mismatch,
    plain_layout,
)
from ._local_objects import LocalFiles
from ._objects import Objects
from ._s3_objects import S3_MAX_KEY_BYTES, S3Objects
from ._storage_errors import first_line, storage_reason
from .base import Capabilities

__all__ = ["ObjectPrefix"]

# the object store's logger, which users configure (the name it had before this split)
logger = logging.getLogger(f"{__package__}.objectstore")


class ObjectPrefix:
    """The storage below one URL: its driver, paths, error boundary and layout marker.

    ``catalog`` is the masked URL of the catalog that manages the prefix, or
    None for a plain store; the layout marker must agree (checked at open).
    The public members are what a backend over the prefix needs, and all it
    may touch: :attr:`objects` (the driver, on full paths), :meth:`path`,
    :meth:`guard`, :attr:`display`, :attr:`layout`, :attr:`marked` and
    :meth:`mark`; the backend that opened it also reads :attr:`root` and
    :attr:`capabilities`, and calls :meth:`close`.
    """

    def __init__(self, url: str, options: dict[str, Any], *, catalog: str | None) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise InvalidArgument(
                f"object store URL {mask_url(url)} needs a scheme, e.g. "
                "'file:///var/lib/state', 'memory://name' or 's3://bucket/prefix'"
            )
        # every string of the options, and the URL's credentials: never shown
        self._masked = sorted({*option_secrets(options), *url_secrets(url)}, key=len, reverse=True)
        self._closed = False
        scheme = url.split("://", 1)[0].lower()
        _refuse_credentials_in_urls(url, options)
        fs, root = self._filesystem(url, scheme, options)
        #: The root path every object path starts with (no trailing "/").
        self.root = str(root).rstrip("/")
        #: The driver: the storage's primitive operations, on full paths.
        self.objects: Objects
        #: What the driver guarantees (the plain backend declares it as its own).
        self.capabilities: Capabilities
        self.objects, self.capabilities = _driver(fs, self.root, scheme)
        #: ``protocol://root`` for messages: never options, credentials masked.
        self.display = _display(scheme, self.root, self.objects)
        with self.guard("opening the store"):
            self.objects.prepare()
        # the catalog (masked URL) that manages this prefix, or None: plain
        self._catalog_display = catalog
        #: The layout marker as found at open, or as written (None: an unmarked prefix).
        self.layout = self._check_marker()
        self._marked = self.layout is not None
        # An unmarked, empty plain S3 prefix: which object layout it will hold is
        # decided by its first writer, maybe another process (object_layout()).
        self._undecided = (
            self.layout is None and catalog is None and self._room_for_v2() and self._is_empty()
        )
        logger.debug("opened %s", self.display)

    # Which layout the prefix holds (backends._layout).

    @property
    def marked(self) -> bool:
        """Whether this instance found or wrote the layout marker (:meth:`mark` is done)."""
        return self._marked

    @property
    def newest_layout(self) -> int:
        """The newest object layout this prefix can hold: 2 for a plain S3 store, else 1."""
        return OBJECT_LAYOUT_2 if self._catalog_display is None and self._room_for_v2() else 1

    def _room_for_v2(self) -> bool:
        """Whether this is S3 with a prefix short enough for layout 2's longest names."""
        objects = self.objects
        if not isinstance(objects, S3Objects):
            return False
        return objects.prefix_bytes + 1 + MAX_ENTRY_PATH_BYTES <= S3_MAX_KEY_BYTES

    def _is_empty(self) -> bool:
        assert isinstance(self.objects, S3Objects)
        with self.guard("listing the store"):
            return self.objects.is_empty()

    @property
    def object_layout(self) -> int:
        """The object layout of a plain store (1 or 2, ``_layout``), as marked.

        Read once at open; only while the prefix was found empty and unmarked
        is the marker read again (another process may have written first).
        """
        if self._undecided:
            found = self._check_marker()
            if found is not None:
                self.layout, self._marked, self._undecided = found, True, False
        layout = self.layout
        return layout.object_layout if layout is not None else 1

    def _marker_path(self) -> str:
        return self.path([LAYOUT_OBJECT])

    def _read_marker(self) -> Layout | None:
        with self.guard("reading the layout marker"):
            try:
                data = self.objects.read(self._marker_path(), MAX_LAYOUT_BYTES)
            except FileNotFoundError:
                return None
        return decode_layout(data, self.display)

    def _check_marker(self) -> Layout | None:
        """Refuse a prefix written the other way; the marker, if there is one."""
        found = self._read_marker()
        if found is None:
            return None
        error = layout_mismatch(self.display, found, with_catalog=self._catalog_display is not None)
        if error is not None:
            raise error
        return found

    def mark(self, catalog_id: str | None = None) -> None:
        """Before the first write of this instance: record the layout (once per prefix).

        ``catalog_id`` is the identity of the catalog database that manages
        the prefix (None for a plain store); a marker another writer wrote
        first must name the same one.
        """
        if self._marked:
            return
        with_catalog = self._catalog_display is not None
        with self.guard("checking the layout"):
            empty = check_layout(
                self.objects.walk, self.root, self.display, with_catalog=with_catalog
            )
        if with_catalog:
            marker = Layout(
                managed_by_catalog=True, catalog=self._catalog_display, catalog_id=catalog_id
            )
        else:  # a new S3 store takes layout 2; one that holds objects keeps layout 1
            marker = plain_layout(OBJECT_LAYOUT_2 if empty and self._room_for_v2() else 1)
        with self.guard("writing the layout marker"):
            try:
                self.objects.create(self._marker_path(), encode_layout(marker))
            except FileExistsError:  # another writer marked it first: check theirs
                self._undecided = False
                self.layout = self._check_marker()
                if (
                    with_catalog
                    and self.layout is not None
                    and self.layout.catalog_id != catalog_id
                ):
                    raise another_catalog(
                        self.display, self.layout, self._catalog_display or "this catalog"
                    ) from None
                self._marked = self.layout is not None
                return
        self.layout, self._marked, self._undecided = marker, True, False

    def remark(self, marker: Layout) -> None:
        """Replace the marker (moving the prefix to another object layout, ``_layoutmove``)."""
        with self.guard("writing the layout marker"):
            self.objects.overwrite(self._marker_path(), encode_layout(marker))
        self.layout, self._marked, self._undecided = marker, True, False

    def _filesystem(self, url: str, scheme: str, options: dict[str, Any]) -> tuple[Any, str]:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - fsspec is a dependency
            raise InvalidArgument("object stores need fsspec: pip install fsspec") from exc
        settings = {"skip_instance_cache": True, **options}  # no hidden shared instances
        if scheme in ("s3", "s3a"):
            # list after write must see it (a delete's re-list relies on it): not optional
            settings["use_listings_cache"] = False
        try:
            fs, root = url_to_fs(url, **settings)
        except ImportError as exc:
            hint = (
                "pip install 'gotstate-persist[s3]'"
                if scheme in ("s3", "s3a")
                else (f"install the fsspec implementation of {scheme!r}")
            )
            raise InvalidArgument(f"{scheme}:// storage needs an extra package: {hint}") from exc
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                self._mask(
                    f"{scheme}:// storage refused its URL or options ({type(exc).__name__}: "
                    f"{first_line(exc)}); check the option names"
                )
            ) from self._cause(exc)
        except Exception as exc:
            raise BackendError(
                self._mask(f"cannot open {scheme}:// storage: {type(exc).__name__}")
            ) from self._cause(exc)
        return fs, root

    # The boundary: every storage error becomes ours here, without secrets.

    @contextmanager
    def guard(self, action: str) -> Iterator[None]:
        """Run one storage ``action``: a closed store refuses, and every storage error
        becomes a ``BackendError`` saying what to do, with no secret in it or its cause."""
        if self._closed:
            raise BackendError("this store is closed; open a new one with open_store()")
        try:
            yield
        except PersistError:
            raise
        except Exception as exc:
            raise BackendError(
                self._mask(f"{action} on {self.display} failed: {self._reason(exc)}")
            ) from self._cause(exc)

    def _reason(self, exc: BaseException) -> str:
        bucket = self.objects.bucket if isinstance(self.objects, S3Objects) else None
        return storage_reason(exc, bucket=bucket)

    def _mask(self, message: str) -> str:
        return scrub(message, self._masked)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """``exc`` to chain, or None where its traceback would show a credential."""
        return safe_cause(exc, self._masked)

    def path(self, components: Sequence[str]) -> str:
        """The full path of ``components`` below the root."""
        return "/".join([self.root, *components])

    def close(self) -> None:
        """Refuse every later storage action (:meth:`guard` raises)."""
        self._closed = True


def _refuse_credentials_in_urls(url: str, options: Mapping[str, Any]) -> None:
    """Credentials go in options, never in a URL: fsspec and its clients log URLs.

    s3fs would even take ``KEY:SECRET@bucket`` for a bucket name and quote it
    in its errors; the HTTP filesystem and botocore log every URL they request
    at DEBUG, which no masking of ours can reach.
    """
    if mask_url(url) != url:
        raise InvalidArgument(
            f"{mask_url(url)}: object-store URLs cannot carry credentials (a password, "
            "token or key); pass them as options instead, e.g. key= and secret= for s3://"
        )
    client_kwargs = options.get("client_kwargs")
    endpoints = [options.get("endpoint_url")]
    if isinstance(client_kwargs, Mapping):
        endpoints.append(client_kwargs.get("endpoint_url"))
    for endpoint in endpoints:
        if isinstance(endpoint, str) and mask_url(endpoint) != endpoint:
            raise InvalidArgument(
                f"the endpoint_url option {mask_url(endpoint)} carries credentials, which "
                "the storage client does not use but does log; pass them as options "
                "instead, e.g. key= and secret= for s3://"
            )


def _driver(fs: Any, root: str, scheme: str) -> tuple[Objects, Capabilities]:
    """The primitive operations for ``fs``, and what they guarantee."""
    from fsspec.implementations.local import LocalFileSystem

    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if isinstance(fs, LocalFileSystem):
        return LocalFiles(root), Capabilities(transactions=False, list_is_consistent=True)
    if "memory" in protocols:
        return MemoryObjects(fs, root, scheme), Capabilities(
            transactions=False, list_is_consistent=True, cross_process=False
        )
    if "s3" in protocols:
        # S3 has been strongly consistent (read and list after write) since 2020.
        return S3Objects(fs, root, scheme), Capabilities(
            transactions=False, list_is_consistent=True
        )
    logger.info(
        "%s:// storage: exclusive create relies on the filesystem's open mode 'xb', "
        "whose atomicity fsspec leaves to each implementation",
        scheme,
    )
    return FsspecObjects(fs, root, scheme), Capabilities(
        transactions=False, list_is_consistent=False
    )


def _display(scheme: str, root: str, objects: Objects) -> str:
    """``protocol://root`` for messages: never options, credentials masked (``_redact``)."""
    if isinstance(objects, MemoryObjects):
        return f"{scheme}://{root.lstrip('/')}"
    root = root.split("://", 1)[1] if "://" in root else root  # HTTP roots are whole URLs
    return mask_url(f"{scheme}://{root}")
