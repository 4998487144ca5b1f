"""Who may read the inspector: the holder of the token it printed, and no one else.

The server listens on loopback, but other local users and any web page the
operator visits can reach loopback too. So, as Jupyter does, every request
must carry the random token printed at start: in the query string of the
first URL, after which a cookie carries it (HttpOnly, so no script reads it;
SameSite=Strict, so no other site's page sends it). Everything else is 403.
Tokens are compared in constant time.

Every answer also carries headers that keep the pages inert: a Content
Security Policy allowing only this server's own style sheet and script, no
MIME sniffing, no framing, no caching, and no Referer (the first URL holds
the token).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "SECURE_HEADERS", "TokenGate", "cookie_name", "new_token"]

#: The cookie that carries the token after the first request, suffixed per server
#: (browsers keep one cookie jar for every port of a host, so two inspectors at once
#: must not overwrite each other's).
COOKIE = "gotstate_inspector"
SECURE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_REFUSED = b"403 Forbidden: open the URL with the token that `gotstate-persist ui` printed\n"


def new_token() -> str:
    """A fresh access token: 256 random bits."""
    return secrets.token_urlsafe(32)


def cookie_name(token: str) -> str:
    """The cookie of the server whose token is ``token`` (names it without revealing it)."""
    return f"{COOKIE}_{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def _query_token(scope: Scope) -> str | None:
    from urllib.parse import parse_qs

    query = scope.get("query_string", b"").decode("latin-1")
    values = parse_qs(query).get("token")
    return values[0] if values else None


def _cookie_token(scope: Scope, name: str) -> str | None:
    """The value of cookie ``name``, from every Cookie header of the request."""
    for header, value in scope.get("headers", []):
        if header != b"cookie":
            continue
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(value.decode("latin-1"))
        except CookieError:  # a malformed cookie header holds no token
            continue
        morsel = cookie.get(name)
        if morsel is not None:
            return morsel.value
    return None


class TokenGate:
    """ASGI middleware: refuse (403) any request without the token; add the secure headers."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode("ascii")
        self._cookie = cookie_name(token)

    def _valid(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from_query = self._valid(_query_token(scope))
        allowed = from_query or self._valid(_cookie_token(scope, self._cookie))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURE_HEADERS.items():
                    headers[name] = value
                if from_query:
                    headers.append(
                        "Set-Cookie",
                        f"{self._cookie}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict",
                    )
            await send(message)

        if allowed:
            await self.app(scope, receive, send_with_headers)
            return
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send_with_headers({"type": "http.response.body", "body": _REFUSED})
