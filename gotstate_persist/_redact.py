"""The one rule for showing URLs and dependency errors without their secrets.

Every message, ``repr``, log line and chained traceback that can name a store
goes through here, so what counts as a secret is decided once:

* **URLs** (:func:`mask_url`), whatever the scheme: the password of the user
  info is masked (``user:***@host``; for ``http(s)`` the whole user info,
  where a lone user name is commonly a token), and so is the value of every
  query or fragment parameter whose name looks like a credential
  (:data:`SECRET_NAME`: password, passwd, pwd, secret, token, key,
  credential(s), sig(nature), auth, ... in any case and inside longer names
  such as ``sslpassword`` or ``aws_secret_access_key``). User info is found
  the way either parser that may read the URL finds it (the last ``@`` of the
  authority, as urllib does, or everything up to the first ``@`` after
  ``user:``, as SQLAlchemy does), so an unescaped ``@``, ``/`` or ``?`` in a
  password cannot push part of it out of the masked span; ``user:word``
  without ``@`` and with a "port" that is no number is a password that lost
  its host. A string that is not ``scheme://...`` is never echoed: it shows
  as ``<unparseable URL>``.
* **Option values** (:func:`option_secrets`): strings given as credentials
  beside the URL (storage options, ``connect_args``).
* **Dependency text** (:func:`scrub`): a driver's message is repeated only
  with every known secret (raw, percent-encoded or decoded, or escaped as
  ``repr`` would) masked, and every URL in it masked by the rule above.
* **Chained causes** (:func:`safe_cause`): an exception from a dependency is
  chained only if its whole traceback text (its own causes and contexts
  included) holds none of those secrets and no unmasked URL; otherwise the
  error is raised ``from None`` and keeps only the cause's type name.

Secrets shorter than :data:`MIN_SECRET_LENGTH` are masked where the URL rule
sees them but not hunted for in free text, where they would match ordinary
words. Errors that may quote *plaintext* (an upcaster's, a decoder's) are
never chained at all, by their callers: no list of secrets covers a record.

Nothing here knows about backends: callers pass the secrets they hold.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote, unquote

__all__ = [
    "MASK",
    "SECRET_NAME",
    "UNPARSEABLE_URL",
    "mask_url",
    "option_secrets",
    "safe_cause",
    "scrub",
    "url_secrets",
]

MASK = "***"
UNPARSEABLE_URL = "<unparseable URL>"
#: A query parameter or option whose name matches holds a credential.
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential|sig|auth", re.IGNORECASE)
#: Shorter strings are not hunted for in free text: too many false matches
#: (the URL rule still masks short passwords where it sees them).
MIN_SECRET_LENGTH = 4

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,63}")
# SQLAlchemy's reading of user info: a user without ':' or '/', a ':', then
# a password running to the first '@'.
_SQLALCHEMY_USERINFO = re.compile(r"[^:/@]*:[^@]*(?=@)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,63}://[^\s'\"<>`]*")
_WHOLE_USERINFO_SCHEMES = frozenset({"http", "https"})


def _text(url: object) -> str | None:
    """``url`` as text (a ``sqlalchemy.URL`` rendered with its password), or None."""
    if isinstance(url, str):
        return url
    render = getattr(url, "render_as_string", None)
    text = render(hide_password=False) if callable(render) else None
    return text if isinstance(text, str) else None


def _split(url: str) -> tuple[str, str | None, str, str] | None:
    """``(scheme, userinfo or None, "@" or "", rest)``; None unless ``url`` is ``scheme://...``.

    An authority ``user:word`` without ``@`` whose "port" is not a number is
    taken as user info that lost its host: ``postgresql://user:password``.
    """
    scheme, sep, after = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    authority = re.split(r"[/?#]", after, maxsplit=1)[0]
    by_urllib = authority.rpartition("@")[0] if "@" in authority else None
    match = _SQLALCHEMY_USERINFO.match(after)
    by_sqlalchemy = match.group(0) if match else None
    candidates = [found for found in (by_urllib, by_sqlalchemy) if found is not None]
    if candidates:
        userinfo = max(candidates, key=len)
        return scheme, userinfo, "@", after[len(userinfo) + 1 :]
    port = authority.partition(":")[2]
    if port and not port.isdigit() and not authority.startswith("["):
        return scheme, authority, "", after[len(authority) :]
    return scheme, None, "", after


def _secret_params(text: str) -> Iterator[tuple[int, int]]:
    """Spans of the values of credential-named ``name=value`` pairs in a query."""
    position = 0
    for part in re.split(r"[&;]", text):
        name, sep, value = part.partition("=")
        if sep and value and SECRET_NAME.search(unquote(name)):
            start = position + len(name) + 1
            yield start, start + len(value)
        position += len(part) + 1


def _query_and_fragment(rest: str) -> tuple[str, list[str]]:
    """``rest`` cut at ``?``: the path, then the query and fragment texts present."""
    before_fragment, hash_mark, fragment = rest.partition("#")
    path, question, query = before_fragment.partition("?")
    parts = []
    if question:
        parts.append("?" + query)
    if hash_mark:
        parts.append("#" + fragment)
    return path, parts


def mask_url(url: object) -> str:
    """``url`` as it may be shown: every credential masked (module docstring)."""
    text = _text(url)
    split = None if text is None else _split(text)
    if split is None:
        return UNPARSEABLE_URL
    scheme, userinfo, at, rest = split
    shown = f"{scheme}://"
    if userinfo is not None:
        user, colon, _password = userinfo.partition(":")
        if scheme.lower() in _WHOLE_USERINFO_SCHEMES:
            shown += f"{MASK}{at}"
        else:
            shown += f"{user}:{MASK}{at}" if colon else f"{user}{at}"
    path, parts = _query_and_fragment(rest)
    shown += path
    for part in parts:
        end = 0
        for start, stop in _secret_params(part[1:]):
            shown += part[end : start + 1] + MASK
            end = stop + 1
        shown += part[end:]
    return shown


def url_secrets(url: object) -> list[str]:
    """The credential values in ``url`` (in every form text may carry them), for :func:`scrub`."""
    text = _text(url)
    if text is None:
        return []
    split = _split(text)
    if split is None:
        return _variants([text])  # unparseable: all of it may be a secret
    scheme, userinfo, _at, rest = split
    found: list[str] = []
    if userinfo is not None:
        _user, colon, password = userinfo.partition(":")
        if scheme.lower() in _WHOLE_USERINFO_SCHEMES:
            found.append(userinfo)
        if colon:
            # also as another parser may have cut it, at an unescaped '@'
            found += [password, *password.split("@")]
    for part in _query_and_fragment(rest)[1]:
        found += [part[1:][start:stop] for start, stop in _secret_params(part[1:])]
    return _variants(found)


def option_secrets(options: object, *, by_name: bool = False) -> list[str]:
    """Strings inside ``options`` (nested dicts, lists) that are credentials.

    With ``by_name``, only values under a key named like a credential count
    (``connect_args={"password": ...}``); otherwise every string does, as for
    storage options, where anything (an endpoint URL with user info, a
    session token under an unusual name) may be one.
    """
    return _variants(_option_strings(options, by_name=by_name, named=not by_name))


def _option_strings(value: object, *, by_name: bool, named: bool) -> Iterator[str]:
    if isinstance(value, str):
        if named:
            yield value
    elif isinstance(value, bytes):
        if named:
            yield value.decode("utf-8", "replace")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            secret = named or (isinstance(name, str) and bool(SECRET_NAME.search(name)))
            yield from _option_strings(item, by_name=by_name, named=secret)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _option_strings(item, by_name=by_name, named=named)


def _variants(values: Iterable[str]) -> list[str]:
    """Each secret as text may carry it: raw, decoded, encoded, repr-escaped; longest first."""
    found: set[str] = set()
    for value in values:
        for form in (value, unquote(value), quote(value, safe=""), repr(value)[1:-1]):
            if len(form) >= MIN_SECRET_LENGTH:
                found.add(form)
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL masked and every one of ``secrets`` replaced by ``***``."""
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def safe_cause(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException | None:
    """``exc`` if its whole traceback text is free of secrets, else None (``from None``).

    Checks what any traceback printer shows: the messages of ``exc`` and of
    every cause and context chained to it. A URL in it whose credentials
    would be masked counts as a secret too.
    """
    text = "".join(traceback.format_exception(exc))
    if scrub(text, secrets) != text:
        return None
    return exc
