"""The one masking rule for URLs and dependency text (gotstate_persist._redact).

tests/test_canaries.py drives whole failures through every backend and the
CLI; these pin the rule itself, including URLs no backend accepts.
"""

from __future__ import annotations

import re
import traceback
from contextlib import suppress
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from gotstate_persist._redact import (
    UNPARSEABLE_URL,
    mask_url,
    option_secrets,
    safe_cause,
    scrub,
    url_secrets,
)

MASKED = [
    ("postgresql://gsp:pw@db:5432/app", "postgresql://gsp:***@db:5432/app"),
    ("postgresql://gsp@db/app?password=pw", "postgresql://gsp@db/app?password=***"),
    (
        "postgresql://gsp@db/app?sslmode=require&sslpassword=pw&PassWord=pw",
        "postgresql://gsp@db/app?sslmode=require&sslpassword=***&PassWord=***",
    ),
    ("postgresql://db/app?pass%77ord=pw", "postgresql://db/app?pass%77ord=***"),
    ("s3://bucket/prefix?aws_secret_access_key=pw", "s3://bucket/prefix?aws_secret_access_key=***"),
    (
        "https://host/x?X-Amz-Credential=c&X-Amz-Signature=s&X-Amz-Security-Token=t&sig=s",
        "https://host/x?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&sig=***",
    ),
    ("https://user:pw@host/x", "https://***@host/x"),
    ("http://ghp_token@host/x", "http://***@host/x"),  # a lone user name is often a token
    ("sftp://user:pw@host/x#token=t", "sftp://user:***@host/x#token=***"),
    (
        "mysql://u:passwd@h/d?api_key=k&apikey=k&pwd=p",
        "mysql://u:***@h/d?api_key=***&apikey=***&pwd=***",
    ),
    # unescaped '@', '/', '?' in a password: masked the way either parser cuts it
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:pa?ss@host/db", "postgresql://u:***@host/db"),
    # user:password without a host: the "port" is not a number
    ("postgresql://gsp:hunter2/db", "postgresql://gsp:***/db"),
]
UNCHANGED = [
    "sqlite:///var/lib/state.db",
    "sqlite:////abs/path/state.db?timeout=5",
    "postgresql://gsp@db:5432/app?sslmode=require&application_name=x",
    "postgresql://[::1]:5432/app",
    "file:///home/a@b/store",  # an '@' in a path is no user info
    "memory://name",
    "s3://bucket/prefix",
]


@pytest.mark.parametrize(("url", "shown"), MASKED)
def test_credentials_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert mask_url(shown) == shown  # masking a masked URL changes nothing


@pytest.mark.parametrize("url", UNCHANGED)
def test_urls_without_credentials_are_shown_as_they_are(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.parametrize(
    "url", ["hunter2-secret", "gsp:hunter2@db/app", "postgres:hunter2", "", "://x", 42, None]
)
def test_a_malformed_url_is_never_echoed(url: object) -> None:
    assert mask_url(url) == UNPARSEABLE_URL


def test_sqlalchemy_urls_are_masked_like_strings() -> None:
    url = sa.make_url("postgresql://gsp:s%40cret@db/app?password=hunter2")
    assert mask_url(url) == "postgresql://gsp:***@db/app?password=***"
    assert {"s@cret", "hunter2"} <= set(url_secrets(url))


def test_scrub_masks_secrets_and_every_url_in_free_text() -> None:
    text = "failed at postgresql://u:hunter2@h/db: auth for 'hunter2' and token sekrit-1"
    assert scrub(text, ["sekrit-1", *url_secrets("postgresql://u:hunter2@h/db")]) == (
        "failed at postgresql://u:***@h/db: auth for '***' and token ***"
    )


def test_option_secrets_by_name_take_only_credential_named_values() -> None:
    options = {"sslmode": "require", "password": "hunter2", "nested": {"api_token": "tok-1234"}}
    assert set(option_secrets(options, by_name=True)) >= {"hunter2", "tok-1234"}
    assert "require" not in option_secrets(options, by_name=True)
    assert "require" in option_secrets(options)


def test_safe_cause_drops_a_cause_whose_traceback_shows_a_secret() -> None:
    def fail(message: str) -> BaseException:
        try:
            try:
                raise OSError(message)
            except OSError as inner:
                raise RuntimeError("wrapped") from inner
        except RuntimeError as exc:
            return exc

    leaky = fail("could not log in with hunter2")
    assert "hunter2" in "".join(traceback.format_exception(leaky))
    assert safe_cause(leaky, ["hunter2"]) is None
    assert safe_cause(fail("connect to http://u:pw@host/x"), []) is None  # an unmasked URL
    clean = fail("connection refused")
    assert safe_cause(clean, ["hunter2"]) is clean


_PASSWORD = st.text(alphabet="QZ@:/?#&=%", min_size=1, max_size=12).map(lambda s: "Q" + s)


@given(password=_PASSWORD, query=st.booleans())
def test_no_parser_finds_a_password_that_the_mask_shows(password: str, query: bool) -> None:
    """Whatever SQLAlchemy or urllib take for the password is masked where it stood."""
    url = (
        f"postgresql://user@host/db?password={password}"
        if query
        else f"postgresql://user:{password}@host/db"
    )
    shown = mask_url(url)
    before = "password=" if query else "user:"
    parsed: list[str | None] = [urlsplit(url).password]
    with suppress(sa.exc.ArgumentError, ValueError):
        parsed.append(sa.make_url(url).password)
    if query:
        parsed.append(re.split("[&;#]", password, maxsplit=1)[0])
    for found in parsed:
        if found:
            assert before + found not in shown
    assert before + "***" in shown
