"""The KeyRing and the sealed envelope (design.md, "Envelope (sealed blob), version 1").

Every stored byte passes through :func:`seal` and :func:`open_envelope`, so this
module keeps the surface as small as :mod:`cryptography.fernet`: a keyring, two
functions and one opaque failure. The choices that are easy to get wrong are
made here once, so callers cannot make them:

* The algorithm is taken from the *key*, never from the header. Trusting the
  header would let an attacker who can write to storage downgrade an encrypted
  record to a MAC or signature check under a different secret.
* The context (namespace, key, version) is supplied by the reader from where it
  is reading and bound into the authentication, so a blob copied elsewhere does
  not open. It is never read from the blob.
* Every authentication failure raises one :class:`IntegrityError` with one
  message, without the cryptography exception chained: which check failed is
  information only an attacker needs. The one exception is a key id the
  keyring does not hold: that id is in the clear in every header anyway, and
  naming it tells the operator which keyring to load.
* Structural problems that no authentic blob can have (wrong magic, a newer
  envelope version, an unknown algorithm, too many bytes) are
  :class:`FormatError`, so an operator can tell "not ours / too new" from
  "tampered", and are detected before any cryptographic work.

Key material never appears in ``repr``, in messages, in pickles or in chained
exceptions; the only way out is :meth:`KeyRing.export`.

This module is the public face; the parts live in private modules, lowest
first: ``_wire`` (the header layout and the algorithm table with each
algorithm's wire id written out), ``_keys`` (one key: its primitive and its
JSON entry), ``_keyring`` (the ring and its JSON document) and ``_envelope``
(argument checks, the context and the header).
"""

from __future__ import annotations

from gotstate_persist._envelope import (
    EnvelopeHeader,
    envelope_overhead,
    open_envelope,
    read_header,
    seal,
)
from gotstate_persist._keyring import DEFAULT_ENV_VAR, KeyRing
from gotstate_persist._keys import format_key_id
from gotstate_persist._wire import ALGORITHMS, MAX_BLOB_BYTES

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ENV_VAR",
    "MAX_BLOB_BYTES",
    "EnvelopeHeader",
    "KeyRing",
    "envelope_overhead",
    "format_key_id",
    "open_envelope",
    "read_header",
    "seal",
]
