"""Security headers on every HTTP response, and a true ``Allow`` on every 405.

Each response gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and a
Content-Security-Policy chosen by the kind of path:

- the search page (``/``, ``/static/...``): its scripts, styles, thumbnails, video and API calls
  from its own origin only, nothing inline, no plugins, no ``<base>``, never framed;
- media (``/videos/{id}/file``, ``/videos/{id}/thumbnail``): ``default-src 'none'; sandbox``, so
  a file opened directly in a browser runs nothing;
- FastAPI's interactive docs (``/docs``, ``/redoc``): the CDN assets and inline bootstrap script
  FastAPI's pages are made of, nothing else;
- everything else (the JSON API, errors, metrics): ``default-src 'none'; frame-ancestors 'none'``.

A header the response already carries is left as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
MEDIA_CSP = "default-src 'none'; sandbox"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
MEDIA_ENDINGS = ("/file", "/thumbnail")


def _headers(csp: str) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", csp.encode("latin-1")),
    )


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers when a response starts (no body buffering, no
    task group). ``docs_paths`` are the app's documentation pages."""

    def __init__(self, app: ASGIApp, docs_paths: frozenset[str] = frozenset()) -> None:
        self.app, self.docs_paths = app, docs_paths
        self.page, self.media = _headers(PAGE_CSP), _headers(MEDIA_CSP)
        self.api, self.docs = _headers(API_CSP), _headers(DOCS_CSP)

    def headers_for(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        """The headers for a request path."""
        if path == "/" or path.startswith("/static/"):
            return self.page
        if path.startswith("/videos/") and path.endswith(MEDIA_ENDINGS) and path.count("/") == 3:
            return self.media
        if path in self.docs_paths:
            return self.docs
        return self.api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Scope) -> set[str]:
    """The methods some route of ``app`` (not a mount: its app answers for itself) would take
    at the request's path. Asked of the routes' public ``matches``, one method at a time: FastAPI
    keeps included routers' routes behind a private wrapper."""
    routes = [r for r in app.router.routes if not isinstance(r, Mount)]
    return {
        method
        for method in METHODS
        if any(r.matches({**scope, "method": method})[0] is Match.FULL for r in routes)
    }


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's own answer to an HTTPException; a 405's ``Allow`` lists the methods of every
    route at the path (Starlette names only the first route's: POST alone for /videos)."""
    if exc.status_code == 405:
        given = (exc.headers or {}).get("Allow", "")
        methods = {m.strip() for m in given.split(",") if m.strip()}
        allow = ", ".join(sorted(methods | allowed_methods(request.app, request.scope)))
        exc = StarletteHTTPException(
            405, exc.detail, headers={**(exc.headers or {}), "Allow": allow}
        )
    return await http_exception_handler(request, exc)


class HanetAPI(FastAPI):
    """FastAPI with the security headers outside every other layer, so that they are also on
    the 500 answers of Starlette's outermost error middleware, and a true ``Allow`` on 405s."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_exception_handler(StarletteHTTPException, _http_error)

    def build_middleware_stack(self) -> ASGIApp:
        docs = {self.docs_url, self.redoc_url, self.swagger_ui_oauth2_redirect_url}
        return SecurityHeaders(
            super().build_middleware_stack(), frozenset(p for p in docs if p is not None)
        )
