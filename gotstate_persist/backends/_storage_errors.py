"""Why a storage call failed, in words that tell the user what to do.

Every driver raises its storage's own errors (``OSError``, botocore's and
aiohttp's exceptions as s3fs and fsspec pass them on); the object-store
boundary turns each into a ``BackendError`` whose message comes from here.
One home for the error codes and their advice, so the local-file, S3 and
generic fsspec drivers, and the boundary, read an error the same way.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

__all__ = ["first_line", "missing_bucket", "s3_code", "storage_reason"]

_S3_MISSING_BUCKET = frozenset({"NoSuchBucket", "404"})
_S3_REFUSED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "403",
    }
)
_UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    }
)
_NO_CREDENTIALS = frozenset({"NoCredentialsError", "PartialCredentialsError"})
_OS_REASONS: Mapping[int, str] = {
    errno.EROFS: "the file system is read-only; mount it writable or choose another directory",
    errno.ENOSPC: "no space is left on the device; free some space and retry",
    errno.EDQUOT: "the disk quota is exhausted; free some space and retry",
    errno.EACCES: "permission denied; make the directory writable by this user",
    errno.EPERM: "the operation is not permitted here (hard links, which exclusive create "
    "needs, may be unsupported on this file system); choose another directory",
    errno.EXDEV: "hard links are not supported here; choose another directory",
    errno.EOPNOTSUPP: "the file system does not support an operation exclusive create needs "
    "(hard links); choose another directory",
}


def s3_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception that s3fs translated, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
        current = current.__cause__ or current.__context__
    return None


def missing_bucket(exc: BaseException) -> bool:
    """Whether ``exc`` says the bucket itself is missing (not merely an object)."""
    return s3_code(exc) in _S3_MISSING_BUCKET


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, for a one-line message."""
    text = str(exc)
    return text.splitlines()[0] if text else ""


def storage_reason(exc: BaseException, *, bucket: str | None) -> str:
    """What went wrong and what to do, for a failure of a store on S3 ``bucket`` (or not S3).

    Never the storage options: the caller masks what the exception's own text may carry.
    """
    code = s3_code(exc)
    if bucket is not None:
        if code in _S3_MISSING_BUCKET:
            return (
                f"bucket {bucket!r} does not exist; create it first "
                "(gotstate-persist never creates buckets)"
            )
        if code in _S3_REFUSED:
            return (
                f"S3 refused the request ({code}); check the credentials and that they "
                "may list, read, write and delete objects in this bucket"
            )
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _NO_CREDENTIALS:
        return (
            "no usable credentials were found; pass them as options (e.g. key and secret) "
            "or configure the provider's credential chain"
        )
    if names & _UNREACHABLE or isinstance(exc, (ConnectionError, TimeoutError)):
        return (
            f"the storage endpoint could not be reached ({type(exc).__name__}); check the "
            "endpoint_url option, the network, and that the service is running"
        )
    known = _OS_REASONS.get(exc.errno) if isinstance(exc, OSError) and exc.errno else None
    if known is not None:
        return known
    if isinstance(exc, PermissionError):
        return "permission denied; check the credentials or the file permissions"
    if code is not None:
        return f"the service answered {code}; retry, or check the service's status"
    if isinstance(exc, OSError) and exc.errno:
        return f"{type(exc).__name__}: {os.strerror(exc.errno)}"
    return f"{type(exc).__name__}: {first_line(exc)}"
