"""S3 for the tests: a moto server on localhost and a fresh bucket per test.

The server runs in this process (``ThreadedMotoServer``) and is reached over
real HTTP, so s3fs, aiobotocore and the conditional ``If-None-Match: *`` PUT are
exercised as they are against AWS. Fake credentials are set in the
environment only while the server fixture is alive, so a developer's real AWS
credentials can never be picked up by a test.

moto checks ``If-None-Match`` and then stores the object as two steps, while
its server handles requests on several threads; S3 itself makes the
conditional PUT atomic. The fixture serialises moto's PutObject handler so the
emulator keeps S3's guarantee and the racing-writer tests test our code, not
moto's threading.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

__all__ = ["S3Requests", "s3_layout1_url", "s3_requests", "s3_server", "s3_url"]

FAKE_ACCESS_KEY = "gsp-fake-access-key"
FAKE_SECRET_KEY = "gsp-fake-secret-key"
REGION = "us-east-1"
S3_PREFIX = "state"
_START_TIMEOUT_S = 20.0
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def _unavailable(reason: str) -> NoReturn:
    """Fail in CI (a missing S3 emulator must not pass silently), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"S3 tests cannot run: {reason}")
    pytest.skip(f"S3 tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _atomic_put_object(original: Callable[..., Any]) -> Callable[..., Any]:
    lock = threading.Lock()

    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    return put_object


class S3Requests:
    """Every request the moto server received: ``(method, path, query, headers)``.

    Counted where moto's WSGI application is entered, so it is what went over
    the wire, whatever client sent it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str, str, dict[str, str]]] = []

    def record(self, environ: dict[str, Any]) -> None:
        headers = {
            name[5:].replace("_", "-").lower(): str(value)
            for name, value in environ.items()
            if name.startswith("HTTP_")
        }
        entry = (
            str(environ.get("REQUEST_METHOD", "")),
            str(environ.get("PATH_INFO", "")),
            str(environ.get("QUERY_STRING", "")),
            headers,
        )
        with self._lock:
            self._seen.append(entry)

    def take(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """The requests since the last ``take`` (and forget them)."""
        with self._lock:
            taken, self._seen = self._seen, []
        return taken


_REQUESTS = S3Requests()


def _recording(original: Callable[..., Any]) -> Callable[..., Any]:
    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        _REQUESTS.record(environ)
        return original(self, environ, start_response)

    return call


@pytest.fixture
def s3_requests(s3_server: str) -> S3Requests:
    """The requests the moto server receives from now on (``take()`` them)."""
    del s3_server
    _REQUESTS.take()
    return _REQUESTS


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free localhost port; yields its endpoint URL."""
    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication
        from moto.s3.responses import S3Response
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        _unavailable(f"moto[server] is not installed ({exc}); pip install -e '.[test]'")

    with pytest.MonkeyPatch.context() as patch:
        for name in _CREDENTIAL_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_KEY)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setattr(S3Response, "put_object", _atomic_put_object(S3Response.put_object))
        patch.setattr(
            DomainDispatcherApplication,
            "__call__",
            _recording(DomainDispatcherApplication.__call__),
        )
        werkzeug_log = logging.getLogger("werkzeug")
        quiet_before = werkzeug_log.level
        werkzeug_log.setLevel(logging.WARNING)  # it logs one line per request otherwise

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        # start() waits forever if the server thread dies while binding; bound it.
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        starter.join(_START_TIMEOUT_S)
        if starter.is_alive():
            _unavailable(f"the moto server did not start within {_START_TIMEOUT_S:.0f} s")
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            werkzeug_log.setLevel(quiet_before)


def _client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=FAKE_ACCESS_KEY,
        aws_secret_access_key=FAKE_SECRET_KEY,
    )


def _empty_and_remove(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_url(s3_server: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("s3://<fresh bucket>/state", storage options)``; the bucket is removed afterwards."""
    client = _client(s3_server)
    bucket = f"gsp-{uuid.uuid4().hex[:24]}"
    client.create_bucket(Bucket=bucket)
    options: dict[str, Any] = {
        "endpoint_url": s3_server,
        "key": FAKE_ACCESS_KEY,
        "secret": FAKE_SECRET_KEY,
        "client_kwargs": {"region_name": REGION},
    }
    try:
        yield f"s3://{bucket}/{S3_PREFIX}", options
    finally:
        _empty_and_remove(client, bucket)


#: The marker every release before object layout 2 wrote at a plain store's first write.
LAYOUT_1_MARKER = b'{"managed_by_catalog":false,"catalog":null,"catalog_id":null}'


@pytest.fixture
def s3_layout1_url(
    s3_url: tuple[str, dict[str, Any]], s3_server: str
) -> tuple[str, dict[str, Any]]:
    """Like ``s3_url``, but the prefix is a layout-1 store, as earlier releases made it."""
    url, options = s3_url
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    _client(s3_server).put_object(
        Bucket=bucket, Key=f"{prefix}/gotstate-persist.json", Body=LAYOUT_1_MARKER
    )
    return url, options
