"""Checks that guard the server's doors: tokens, WebSocket origins, request sizes, client text in logs.

Small functions with no FastAPI state, so the REST routes (`app.py`) and the WebSocket route apply
the same rules:

- `token_matches` compares in constant time (`hmac.compare_digest`), so a wrong guess takes as long
  as a nearly right one; `presented_token` takes a token from `Authorization: Bearer` or `?token=`.
- `read_refusal` says why a read (a GET route or the WebSocket) is refused, or None.
- `origin_allowed` / `origin_refusal` check a WebSocket's `Origin` header: browsers send it and let
  any page open a WebSocket to loopback, so without the check any web site a user visits could read
  the decisions. Clients that are not browsers send no Origin and pass.
- `RequestGuard`, an ASGI middleware, refuses request bodies over a size (413) and turns any
  unexpected exception into a 500 with a generic body (the traceback goes to the log only).
- `loggable` bounds and escapes text a client supplied before it reaches a log line or a message;
  `TokenRedactingFilter` keeps `?token=` values out of the access log.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def loggable(value: object, limit: int = 64) -> str:
    """`repr` of at most `limit` characters of `value`, with its full length when cut; control characters
    come out escaped, so a client cannot forge log lines or flood the log."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


_TOKEN_QUERY = re.compile(r"(?<=[?&]token=)[^&#\s]*", flags=re.IGNORECASE)


def redact_tokens(text: str) -> str:
    """`text` with the value of every `token=` query parameter replaced by `***`."""
    return _TOKEN_QUERY.sub("***", text)


class TokenRedactingFilter(logging.Filter):
    """For the access log (`uvicorn.access`): a read token sent as `?token=` must not be written to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def token_matches(presented: str | None, expected: str | None) -> bool:
    """True when `expected` is set and `presented` equals it; the comparison takes constant time."""
    if not expected or presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def presented_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token a client presents: the bearer header first, else the `token` query parameter (browsers
    cannot set headers on a WebSocket)."""
    return bearer_token(authorization) or query_token or None


def read_refusal(presented: str | None, *, read_token: str | None, admin_token: str | None) -> str | None:
    """Why a read is refused, or None. Reads are open unless `read_token` is set; then the read token or the
    admin token (which may change state, so it may also read) must be presented."""
    if not read_token:
        return None
    if token_matches(presented, read_token) or token_matches(presented, admin_token):
        return None
    return "A valid token is required to read: send 'Authorization: Bearer <token>' or '?token=<token>'."


def _origin_parts(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an `Origin` value, lower-cased; None when it is not a URL origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


def origin_allowed(origin: str | None, allowed: Sequence[str] | None, *,
                   own_address: tuple[str, int] | None = None) -> bool:
    """Whether a WebSocket with this `Origin` header may connect.

    No Origin (a client that is not a browser): allowed. A page from `own_address`, the IP address and port
    this very connection came in on (the server's own dashboard, opened by address), is allowed too: an
    attacker's page cannot have that origin, not even through DNS rebinding, which gives it a host name.
    `allowed` None: only pages served from a loopback host (127.0.0.1, localhost, ::1, any port) may connect.
    Otherwise `origin` must equal one of `allowed` (scheme, host and port; `*` allows every origin). The
    literal `null` origin (sandboxed pages, files) passes only through `*`.
    """
    if origin is None:
        return True
    if allowed is not None and "*" in allowed:
        return True
    parts = _origin_parts(origin)
    if parts is None:
        return False
    if own_address is not None and parts[0] in ("http", "https"):
        port = parts[2] if parts[2] is not None else {"http": 80, "https": 443}[parts[0]]
        if (parts[1], port) == (own_address[0].lower(), own_address[1]):
            return True
    if allowed is None:
        return parts[0] in ("http", "https") and parts[1] in LOOPBACK_HOSTS
    return any(_origin_parts(entry) == parts for entry in allowed)


def origin_refusal(origin: str | None, allowed: Sequence[str] | None, *,
                   own_address: tuple[str, int] | None = None) -> str | None:
    """Why a WebSocket from `origin` is refused, or None (short enough for a close frame's reason; the
    origin itself is not echoed)."""
    if origin_allowed(origin, allowed, own_address=own_address):
        return None
    return "WebSockets from this origin are not allowed; the server's allowed_origins setting lists those that are."


def websocket_refusal(headers: Mapping[str, str], query: Mapping[str, str], *, read_token: str | None,
                      admin_token: str | None, allowed_origins: Sequence[str] | None,
                      own_address: tuple[str, int] | None = None) -> str | None:
    """Why a WebSocket handshake is refused (origin first, then token), or None: what the `/ws` route
    checks before `accept()`, closing with code 1008 (policy violation) when refused. Every reason fits
    a close frame (at most 123 bytes)."""
    return origin_refusal(headers.get("origin"), allowed_origins, own_address=own_address) or read_refusal(
        presented_token(headers.get("authorization"), query.get("token")),
        read_token=read_token, admin_token=admin_token)


class RequestGuard:
    """ASGI middleware for HTTP requests: bodies over `max_body_bytes` are refused with 413 before the app
    reads them, and an exception no route handled becomes a 500 whose body says nothing of the server (the
    traceback is logged once, with an error id the body repeats). WebSocket and lifespan pass through."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(send)
            return
        # Read the body first (bounded), so an over-long chunked body is refused as well.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, watch)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("Unhandled error %s in %s %s.", error_id, scope.get("method"),
                             loggable(scope.get("path"), 200))
            if started:  # the status line is out: all that is left is to end the response
                raise
            await _send_json(send, 500, {"detail": f"Internal server error (error id {error_id}); the server "
                                                   "log has the details."}, close=False)

    async def _too_large(self, send: Send) -> None:
        await _send_json(send, 413, {"detail": f"The request body is larger than {self.max_body_bytes} bytes; "
                                               "send a smaller one."})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any], *, close: bool = True) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:  # the unread rest of a refused body must not be taken for the next request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
