"""The inspector's routes: one HTML page per view, the same data as JSON under ``/api``.

Only GET routes exist (HEAD comes with them), so nothing a browser sends
can change the store. Pages are rendered by Jinja2 templates with
autoescaping on: every name and value read from the store is text to the
template, never markup. The JSON answers carry decoded values in the one
typed-JSON shape (``_typedjson``), tagged with ``JSON_SHAPE_VERSION``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._typedjson import JSON_SHAPE_VERSION
from ..errors import InvalidArgument, NotFound, PersistError
from ._access import TokenGate
from ._reader import Inspector
from ._views import Views

__all__ = ["create_app"]

Handler = Callable[[Request], Awaitable[Response]]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gotstate_persist.ui", "templates"),
        autoescape=True,
    )
    env.filters["q"] = lambda value: quote(str(value), safe="")
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.filters["size"] = _size
    return env


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    value = size / 1024.0
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1023.95:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _page(
    env: jinja2.Environment, inspector: Inspector, template: str, view: Callable[..., Any]
) -> tuple[Handler, Handler]:
    """The HTML and JSON handlers of one view (``view(request)`` returns its data)."""

    async def html(request: Request) -> Response:
        try:
            data = view(request)
        except _Refusal as exc:
            return _error(env, inspector, exc.status, str(exc))
        context = {"data": data, "store": inspector.shown_url, "decoded": inspector.keyring}
        return HTMLResponse(env.get_template(template).render(**context))

    async def api(request: Request) -> Response:
        try:
            data = view(request)
        except _Refusal as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return JSONResponse({"shape_version": JSON_SHAPE_VERSION, **data})

    return html, api


def _error(env: jinja2.Environment, inspector: Inspector, status: int, message: str) -> Response:
    text = env.get_template("error.html").render(
        status=status, message=message, store=inspector.shown_url, decoded=inspector.keyring
    )
    return HTMLResponse(text, status_code=status)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _guarded(view: Callable[[Request], dict[str, Any]]) -> Callable[[Request], dict[str, Any]]:
    """``view`` whose failures are answers: 404 for what is not there, 400 for a bad request."""

    def run(request: Request) -> dict[str, Any]:
        try:
            return view(request)
        except NotFound as exc:
            raise _Refusal(404, str(exc)) from None
        except (InvalidArgument, ValueError) as exc:
            raise _Refusal(400, str(exc)) from None
        except PersistError as exc:
            raise _Refusal(500, f"{type(exc).__name__}: {exc}") from None

    return run


def create_app(inspector: Inspector, token: str) -> TokenGate:
    """The inspector as an ASGI application that admits only holders of ``token``."""
    env = _environment()
    views = Views(inspector)
    routes: list[Route | Mount] = []
    for path, template, view in (
        ("/", "namespaces.html", views.namespaces),
        ("/keys", "keys.html", views.keys),
        ("/key", "key.html", views.key),
        ("/record", "record.html", views.record),
        ("/diff", "diff.html", views.diff),
        ("/verify", "verify.html", views.verify),
        ("/extensions", "extensions.html", views.extensions),
        ("/config", "config.html", views.config),
    ):
        html, api = _page(env, inspector, template, _guarded(view))
        routes.append(Route(path, html, methods=["GET"]))
        routes.append(
            Route("/api" + (path if path != "/" else "/namespaces"), api, methods=["GET"])
        )

    async def robots(_request: Request) -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    routes.append(Route("/robots.txt", robots, methods=["GET"]))
    routes.append(
        Mount("/static", StaticFiles(packages=[("gotstate_persist.ui", "static")]), name="static")
    )
    app = Starlette(routes=routes)
    return TokenGate(app, token)
