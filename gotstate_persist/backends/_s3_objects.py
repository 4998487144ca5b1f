"""S3 (through s3fs) as an object store: the driver, and what the service's answers mean.

S3 gets its own driver because it offers what the generic fsspec one cannot
rely on: a conditional ``PutObject`` (``If-None-Match: *`` for exclusive
create, ``If-Match`` on the ETag for compare-and-set), ranged reads that
bound what a read costs, and batched deletes. Its key-length limit also
bounds how long the store's prefix may be, which is checked here at open.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from fsspec.asyn import sync

from ..codec import MAX_BLOB_BYTES
from ..errors import InvalidArgument
from ._fsspec_objects import FsspecObjects
from ._objectnames import MAX_RELATIVE_PATH_BYTES
from ._objects import Oversized
from ._storage_errors import s3_code

__all__ = ["S3_DELETE_BATCH", "S3_MAX_KEY_BYTES", "S3Objects", "StoredBlob"]

#: S3 refuses longer object keys.
S3_MAX_KEY_BYTES = 1024
#: Objects per S3 DeleteObjects request (the service's maximum).
S3_DELETE_BATCH = 1000
_S3_CREATE_CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
#: A ranged GET of an empty object: there is no byte to send.
_S3_INVALID_RANGE = frozenset({"InvalidRange", "416"})
#: Objects emptied at once by one ``empty`` (concurrent PUTs).
_EMPTY_BATCH = 64


class StoredBlob:
    """One object as a GET or HEAD saw it: bytes (a GET only), metadata, tag and size."""

    __slots__ = ("data", "etag", "metadata", "size")

    def __init__(self, data: bytes, metadata: Mapping[str, str], etag: str, size: int) -> None:
        self.data, self.metadata, self.etag, self.size = data, metadata, etag, size


class S3Objects(FsspecObjects):
    """S3 through s3fs: conditional ``PutObject`` and batched ``DeleteObjects``."""

    #: s3fs lists a prefix in one flat listing that raises its errors (and
    #: passes unknown options on to the service call).
    _find_options: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, fs: Any, root: str, protocol: str) -> None:
        bucket, prefix, _version = fs.split_path(root)
        if not bucket:
            raise InvalidArgument("name a bucket in the URL: s3://bucket/prefix")
        room = S3_MAX_KEY_BYTES - MAX_RELATIVE_PATH_BYTES - 1
        size = len(str(prefix).encode("utf-8"))
        if size > room:
            raise InvalidArgument(
                f"the S3 prefix is {size} bytes; S3 keys hold at most {S3_MAX_KEY_BYTES} "
                f"bytes and the longest key, namespace and version take "
                f"{MAX_RELATIVE_PATH_BYTES + 1} below the prefix, so keep the prefix to at "
                f"most {room} bytes"
            )
        super().__init__(fs, root, protocol)
        self.bucket = str(bucket)
        #: The prefix's length in bytes (new stores take object layout 2 if it leaves room).
        self.prefix_bytes = size

    def names(self, directory: str, prefix: str = "", *, quick: bool = False) -> list[str]:
        # One ListObjectsV2 per 1,000 names, restricted to ``prefix`` by the
        # service, without s3fs's per-entry info dictionaries.
        return self.names_after(directory, prefix)

    def names_after(self, directory: str, prefix: str = "", after: str | None = None) -> list[str]:
        """Names in ``directory`` starting with ``prefix`` that sort after ``after``."""
        start = str(self._fs.split_path(directory)[1]) + "/"
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": start + prefix,
            "Delimiter": "/",
        }
        if after is not None:
            request["StartAfter"] = start + after
        found: list[str] = []
        while True:
            answer = self._fs.call_s3("list_objects_v2", **request)
            found += [str(item["Key"])[len(start) :] for item in answer.get("Contents", ())]
            token = answer.get("NextContinuationToken")
            if not answer.get("IsTruncated") or not token:
                return found
            request["ContinuationToken"] = token

    def prepare(self) -> None:
        # Never create the bucket: a typo would otherwise silently make a new one.
        self._fs.call_s3("head_bucket", Bucket=self.bucket)

    def read(self, path: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        # One ranged GET, as cheap as a plain one: the service sends at most
        # limit + 1 bytes however large the object is.
        try:
            data = bytes(self._fs.cat_file(path, start=0, end=limit + 1))
        except OSError as exc:
            if s3_code(exc) not in _S3_INVALID_RANGE:
                raise
            return b""  # only an empty object has no first byte to send
        if len(data) > limit:
            raise Oversized(None, limit)
        return data

    def create(self, path: str, data: bytes) -> None:
        try:
            self._fs.pipe_file(path, data, mode="create")  # If-None-Match: *
        except OSError as exc:
            # s3fs maps a 412 to FileExistsError only when the service names the
            # failed condition; some S3-compatible stores do not, and a 409
            # means a concurrent conditional write to the same name.
            if not isinstance(exc, FileExistsError) and s3_code(exc) in _S3_CREATE_CONFLICT:
                raise FileExistsError(path) from exc
            raise

    def swap(self, path: str, expected: bytes, data: bytes) -> bool:
        # Compare-and-set by ETag: the tag read first guards the PUT (If-Match),
        # so a change after it, even one the read below already saw, fails it.
        key = str(self._fs.split_path(path)[1])
        try:
            tag = self._fs.call_s3("head_object", Bucket=self.bucket, Key=key)["ETag"]
        except FileNotFoundError:
            return False
        if not self.holds(path, expected):
            return False
        try:
            self._fs.call_s3("put_object", Bucket=self.bucket, Key=key, Body=data, IfMatch=tag)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                return False  # deleted meanwhile
            if isinstance(exc, FileExistsError) or s3_code(exc) in _S3_CREATE_CONFLICT:
                return False  # replaced by someone else meanwhile
            raise
        return True

    def remove(self, paths: Sequence[str]) -> None:
        keys = [str(self._fs.split_path(path)[1]) for path in paths]
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start : start + S3_DELETE_BATCH]
            answer = self._fs.call_s3(
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                code = str(failed[0].get("Code", "unknown"))
                raise PermissionError(
                    errno.EACCES, f"S3 refused to delete {len(failed)} objects ({code})"
                )

    # Object layout 2 (``_blobkeys``): blobs with metadata, read and written in one request.

    def _key(self, path: str) -> str:
        return str(self._fs.split_path(path)[1])

    def put_blob(
        self, path: str, data: bytes, metadata: Mapping[str, str], *, exclusive: bool
    ) -> None:
        """One ``PutObject`` with metadata; ``exclusive``: ``If-None-Match: *``."""
        condition = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self._fs.call_s3(
                "put_object",
                Bucket=self.bucket,
                Key=self._key(path),
                Body=data,
                Metadata=dict(metadata),
                **condition,
            )
        except OSError as exc:
            if not isinstance(exc, FileExistsError) and s3_code(exc) in _S3_CREATE_CONFLICT:
                raise FileExistsError(path) from exc
            raise

    def get_blob(self, path: str, limit: int = MAX_BLOB_BYTES) -> StoredBlob:
        """One ranged GET: at most ``limit`` bytes, with the object's metadata and tag.

        An empty object (a deleted version's blob) has no byte to send: it
        comes back empty, without metadata. ``FileNotFoundError`` if absent.
        """
        try:
            answer = self._fs.call_s3(
                "get_object", Bucket=self.bucket, Key=self._key(path), Range=f"bytes=0-{limit}"
            )
        except OSError as exc:
            if s3_code(exc) not in _S3_INVALID_RANGE:
                raise
            return StoredBlob(b"", {}, "", 0)
        body = answer["Body"]
        try:
            data = bytes(sync(self._fs.loop, body.read))
        finally:
            body.close()
        if len(data) > limit:
            raise Oversized(None, limit)
        return StoredBlob(data, answer.get("Metadata") or {}, str(answer["ETag"]), len(data))

    def head_blob(self, path: str) -> StoredBlob:
        """One ``HeadObject``: metadata, tag and size, no bytes (``FileNotFoundError``)."""
        answer = self._fs.call_s3("head_object", Bucket=self.bucket, Key=self._key(path))
        return StoredBlob(
            b"", answer.get("Metadata") or {}, str(answer["ETag"]), int(answer["ContentLength"])
        )

    def swap_blob(
        self, path: str, expected: bytes, data: bytes, metadata: Mapping[str, str]
    ) -> str | None:
        """Replace the blob if it still holds ``expected``: its new tag, or None.

        One GET reads the blob and its tag, and the PUT is conditional on that
        tag (``If-Match``), so a change made after the read fails it.
        """
        try:
            found = self.get_blob(path, len(expected))
        except (FileNotFoundError, Oversized):
            return None
        if found.data != expected:
            return None
        try:
            answer = self._fs.call_s3(
                "put_object",
                Bucket=self.bucket,
                Key=self._key(path),
                Body=data,
                Metadata=dict(metadata),
                IfMatch=found.etag,
            )
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, FileExistsError)):
                return None
            if s3_code(exc) in _S3_CREATE_CONFLICT:
                return None
            raise
        return str(answer["ETag"])

    def empty(self, paths: Sequence[str], metadata: Mapping[str, str]) -> None:
        """Overwrite each object with an empty one carrying ``metadata``.

        A deleted version keeps its name this way; s3fs sends the PUTs
        concurrently, in batches.
        """
        if paths:
            self._fs.pipe(
                dict.fromkeys(paths, b""), batch_size=_EMPTY_BATCH, Metadata=dict(metadata)
            )

    def copy_blob(self, source: str, target: str, metadata: Mapping[str, str]) -> None:
        """Server-side copy of ``source`` to ``target`` with new metadata (no bytes move here)."""
        self._fs.call_s3(
            "copy_object",
            Bucket=self.bucket,
            Key=self._key(target),
            CopySource={"Bucket": self.bucket, "Key": self._key(source)},
            Metadata=dict(metadata),
            MetadataDirective="REPLACE",
        )

    def is_empty(self) -> bool:
        """Whether nothing at all is stored below the root (one listing of one name)."""
        start = self._key(self._root).rstrip("/")
        answer = self._fs.call_s3(
            "list_objects_v2", Bucket=self.bucket, Prefix=f"{start}/" if start else "", MaxKeys=1
        )
        return not answer.get("Contents")
