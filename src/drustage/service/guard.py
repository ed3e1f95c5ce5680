"""What every request passes before the application sees it: the Host header on an allow-list
(DNS rebinding cannot reach the service under another name), no cross-origin writes (a page on
another site cannot post films or labels), an access token whenever one is set (it must be when
the service listens beyond loopback), and a body-size cap counted on the stream (a chunked upload
without a Content-Length is stopped at the limit, not spooled to disk first).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

TOKEN_COOKIE = "drustage_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GuardConfig:
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES  # host names (no port) a request may name
    token: str | None = None
    max_body_bytes: int = (64 << 20) + (1 << 16)  # an upload and its multipart framing


class BodyTooLarge(HTTPException):
    """Raised from the request stream; an HTTP exception so that FastAPI's form parsing passes it on."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the {limit >> 20} MiB limit")


def _host_name(value: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware applying ``GuardConfig`` to every HTTP request."""

    def __init__(self, app, config: GuardConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._refusal(scope, headers)
        if problem is not None:
            return await _reply(send, *problem)
        sent_token = self._token_in_query(scope)
        started = False

        async def sending(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if sent_token:  # the page opened with ?token=...: keep it for its own requests
                    cookie = f"{TOKEN_COOKIE}={self.config.token}; HttpOnly; SameSite=Strict; Path=/"
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"set-cookie", cookie.encode("latin-1"))]}
            await send(message)

        total = 0

        async def counting():
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.config.max_body_bytes:
                    raise BodyTooLarge(self.config.max_body_bytes)
            return message

        try:
            await self.app(scope, counting, sending)
        except BodyTooLarge as error:
            if not started:
                await _reply(send, 413, error.detail)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host = _host_name(headers.get("host", ""))
        if host not in self.config.allowed_hosts:
            return 400, "host not allowed (start the server with --allow-host for this name)"
        if scope["method"] in UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and _host_name(urlsplit(origin).netloc) not in self.config.allowed_hosts:
                return 403, "cross-origin request refused"
            if headers.get("sec-fetch-site") == "cross-site":
                return 403, "cross-origin request refused"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            return 413, f"request body is larger than the {self.config.max_body_bytes >> 20} MiB limit"
        if self.config.token is not None and not self._authorised(scope, headers):
            return 401, "access token required (Authorization: Bearer TOKEN, or open the page with ?token=TOKEN)"
        return None

    def _token_in_query(self, scope) -> bool:
        if self.config.token is None:
            return False
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
        return any(hmac.compare_digest(v, self.config.token) for v in values)

    def _authorised(self, scope, headers: dict[str, str]) -> bool:
        token = self.config.token
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].strip(), token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            return False
        if TOKEN_COOKIE in cookie and hmac.compare_digest(cookie[TOKEN_COOKIE].value, token):
            return True
        return self._token_in_query(scope)


async def _reply(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
