"""Object names of the object-store backends: where each name lives, and back.

Layout under the store's root (``/`` separates path components)::

    <namespace components>/<key components>/v0000000007~order~2~1767270645123456
                                            r0000000007       claim of version 7
                                            d0000000009       tombstone: 9 was the highest
                                            .tmp-3f2a...      a writer's temporary (local files)

A store kept with a SQL catalog (``backends.catalog``) uses the same
namespace and key components and names its objects after what the catalog
cannot hold for it: ``o0000000000000000007.2`` (version 7, format 2) and,
once rewritten, ``o0000000000000000007.2.00f3...`` (a rewrite's token).

Three modules own the three parts, and this one the layout as a whole (how
long a path below the root can get) and the single place to import names
from: :mod:`._keypaths` (namespace and key directories, base32),
:mod:`._versionnames` (the objects of a plain store's key directory) and
:mod:`._catalognames` (the objects of a catalog-managed one).
"""

from __future__ import annotations

from .._names import MAX_NAME_BYTES
from ._catalognames import (
    catalog_object_name,
    in_catalog_scheme,
    parse_catalog_object_name,
    parse_catalog_object_path,
)
from ._keypaths import (
    CHUNK_CHARS,
    MAX_STORED_NAME_BYTES,
    decode_key_path,
    decode_namespace_key_path,
    key_components,
    namespace_components,
)
from ._versionnames import (
    MAX_INT64,
    TEMP_PREFIX,
    KeyListing,
    KeySummary,
    StoredVersion,
    check_put_arguments,
    claim_name,
    find_version,
    is_version_name,
    last_tombstone,
    newest_version,
    parse_key_listing,
    parse_version_name,
    rank_versions,
    summarize_exactly,
    summarize_key,
    tombstone_name,
    version_name,
    version_prefix,
)

__all__ = [
    "CHUNK_CHARS",
    "MAX_INT64",
    "MAX_RELATIVE_PATH_BYTES",
    "MAX_STORED_NAME_BYTES",
    "TEMP_PREFIX",
    "KeyListing",
    "KeySummary",
    "StoredVersion",
    "catalog_object_name",
    "check_put_arguments",
    "claim_name",
    "decode_key_path",
    "decode_namespace_key_path",
    "find_version",
    "in_catalog_scheme",
    "is_version_name",
    "key_components",
    "last_tombstone",
    "namespace_components",
    "newest_version",
    "parse_catalog_object_name",
    "parse_catalog_object_path",
    "parse_key_listing",
    "parse_version_name",
    "rank_versions",
    "summarize_exactly",
    "summarize_key",
    "tombstone_name",
    "version_name",
    "version_prefix",
]


def _max_relative_path_bytes() -> int:
    longest = "x" * MAX_NAME_BYTES
    largest = version_name(MAX_INT64, "a" * 64, MAX_INT64, -MAX_INT64)
    return len("/".join([*namespace_components(longest), *key_components(longest), largest]))


#: Longest path below the root that any allowed namespace, key and version
#: produce (954 bytes); S3 keys may be 1,024 bytes, which bounds the prefix.
MAX_RELATIVE_PATH_BYTES = _max_relative_path_bytes()
