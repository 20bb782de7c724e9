"""Keeps other websites out of the local app: a Host allow-list and an Origin check.

A page on any website can point a name it owns at 127.0.0.1 (DNS rebinding) and then read
this app as its own origin, so CORS alone protects nothing: the server must refuse Host
headers that are not its own names. Separately, a browser sends some cross-site POSTs
without asking first (a text/plain body needs no preflight), so a request that carries a
foreign `Origin` is refused before it reaches a route. Browsers send Origin on every
cross-site POST, WebSocket and script read (fetch, XHR), and on the page's own POSTs, but
not on its own GETs or on navigation; refusing foreign reads too means no route's own CORS
rules (Gradio has some) can hand a response to another site. Clients that send no Origin
(scripts, curl, the openai client, gradio_client) are not affected by the second check.

Requests without an Origin (an `<img>`, a link, a form's GET, a frame) are judged by the
browser's `Sec-Fetch-Site`: from another site only a top-level navigation to a page gets
through, never one to a route that changes something (`/logout`), so a page elsewhere can
neither sign a person out nor load the app's files. Every response forbids framing
(`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`: no click-jacking), and the sign-in
cookie Gradio sets is sent back as `SameSite=Lax`, so no other site's request carries it.

All of it runs as one plain ASGI middleware in front of everything the server serves (the
page, Gradio's routes and files, /v1), before routing. It is plain ASGI rather than
Starlette's BaseHTTPMiddleware so that streamed replies and disconnects pass through
untouched.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chatcore.api.schema import ApiError

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# GET routes that change something (Gradio's sign-out ends every session of the user).
STATE_CHANGING_GETS = frozenset({"/logout", "/logout/"})
# Sent with every response: no site may show this app in a frame.
NO_FRAMING = [(b"x-frame-options", b"DENY"),
              (b"content-security-policy", b"frame-ancestors 'none'")]
SAME_SITE = re.compile(rb";\s*samesite=[a-z]+", re.IGNORECASE)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


@dataclass(frozen=True)
class Access:
    """Who may reach the server: where it listens, sign-in, the names it answers to and
    the web front ends that may call /v1."""

    host: str = "127.0.0.1"
    auth: list[tuple[str, str]] | None = None
    api_key: str | None = None
    allowed_hosts: Sequence[str] = ()
    cors_origins: Sequence[Origin] = ()


class GuardSettingError(ValueError):
    """A value given to --allowed-hosts or --cors-origin is not usable; says which."""


def split_host(value: str, scheme: str = "http") -> tuple[str, int] | None:
    """A Host header as (name, port), the name lower-case without a trailing dot or
    brackets; None when it is empty, only a port, or not a host at all."""
    value = value.strip()
    if not value or any(c in value for c in "/\\@?# \t"):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    name = _normal_name(parts.hostname or "")
    if not name:
        return None
    return name, port if port is not None else DEFAULT_PORTS.get(scheme, 80)


def _normal_name(name: str) -> str:
    """One spelling per host: lower case, no trailing dot, addresses in canonical form."""
    name = name.strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def parse_origin(value: str) -> Origin | None:
    """`http://host[:port]` -> Origin; None for "null" and anything that is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    port = port if port is not None else DEFAULT_PORTS[parts.scheme]
    return Origin(parts.scheme, _normal_name(parts.hostname), port)


def parse_allowed_hosts(values: Iterable[str] | None) -> list[str]:
    """`--allowed-hosts a,b` (repeatable) -> names; a value with a scheme, port or path
    is refused with the value named, since it would never match a Host header."""
    names = []
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if not (_is_ip(item.strip("[]")) or HOST_NAME.fullmatch(item.lower())):
                raise GuardSettingError(
                    f"--allowed-hosts: {item!r} is not a host name or address (give names "
                    "like chat.lan or 192.168.1.20, without http:// or a port)")
            names.append(_normal_name(item))
    return names


def parse_cors_origins(values: Iterable[str] | None) -> list[Origin]:
    origins = []
    for value in values or []:
        origin = parse_origin(value)
        if origin is None:
            raise GuardSettingError(
                f"--cors-origin: {value!r} is not a web origin (give one like "
                "http://localhost:3000: scheme, host and port, no path; '*' is not accepted)")
        origins.append(origin)
    return origins


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """Whether a name or address is this machine only (the bind address or a Host)."""
    host = _normal_name(host)
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def own_addresses() -> list[str]:
    """This machine's addresses and name, for a server that listens beyond loopback."""
    found = [socket.gethostname().lower()]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.append(_normal_name(address.address.split("%")[0]))
    return found


@dataclass(frozen=True)
class AllowedHosts:
    """The names this server answers to: loopback always, the bind address, the names the
    person gave (`explicit`), and the machine's own addresses when it serves beyond
    loopback."""

    names: frozenset[str]
    explicit: frozenset[str]

    @classmethod
    def for_server(cls, bind_host: str, extra: Sequence[str] = (),
                   machine: Sequence[str] | None = None) -> AllowedHosts:
        bind = _normal_name(bind_host)
        names = set(extra)
        if bind not in WILDCARD_HOSTS:
            names.add(bind)
        if not is_loopback(bind):
            names.update(own_addresses() if machine is None else machine)
        return cls(frozenset(names), frozenset(extra))

    def allows(self, host: str) -> bool:
        return is_loopback(host) or host in self.names

    def describe(self) -> str:
        shown = ["localhost", "127.0.0.1", "[::1]", *sorted(self.explicit)]
        return ", ".join(shown)


class RequestGuard:
    """ASGI middleware: 403 for a Host that is not one of ours, and for a request whose
    Origin is present and is not this app's own page (or, on /v1, a --cors-origin)."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts,
                 cors_origins: Sequence[Origin] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.cors_origins = frozenset(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        reason = self._refusal(scope, headers)
        if reason is None:
            await self.app(scope, receive, _hardened(send) if scope["type"] == "http" else send)
            return
        log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope["path"], reason)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        await _send_forbidden(scope, send, reason)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> str | None:
        scheme = scope.get("scheme", "http")
        host_header = headers.get("host", "")
        host = split_host(host_header, scheme)
        if host is None:
            return (f"the request's Host header ({host_header!r}) does not name a server: "
                    f"this app answers to {self.hosts.describe()}; to add a name, start it "
                    "with --allowed-hosts NAME")
        if not self.hosts.allows(host[0]):
            return (f"this app does not answer to the name {host[0]!r}: it answers to "
                    f"{self.hosts.describe()}; to reach it as {host[0]}, start it with "
                    f"--allowed-hosts {host[0]}")
        origin_header = headers.get("origin")
        if origin_header is None:
            return _cross_site_refusal(scope, headers)
        origin = parse_origin(origin_header)
        if origin is not None and self._origin_allowed(origin, host, scope["path"]):
            return None
        return (f"requests from the web page at {origin_header} are refused: only this app's "
                f"own page may send them; to let a web front end use {API_PREFIX}, start "
                "the app with --cors-origin ORIGIN")

    def _origin_allowed(self, origin: Origin, host: tuple[str, int], path: str) -> bool:
        if origin.host in self.hosts.explicit:
            return True  # a name the person gave (a reverse proxy may change port or scheme)
        if origin.host == host[0] and origin.port == host[1]:
            return True  # this app's own page: the very name and port the request is sent to
        return _is_api(path) and origin in self.cors_origins


def _cross_site_refusal(scope: Scope, headers: dict[str, str]) -> str | None:
    """Why a request with no Origin that the browser marks as coming from another site (or
    another port of this one: `same-site` ignores ports) is refused; None when it may go
    on. A person following a link to the page gets through; an `<img>`, a frame, a script
    or a link to a route that changes something does not."""
    site = headers.get("sec-fetch-site", "same-origin")
    if site in ("same-origin", "none"):
        return None  # the page's own request, typed into the address bar, or no browser
    path, dest = scope.get("path", ""), headers.get("sec-fetch-dest", "")
    if path not in STATE_CHANGING_GETS and scope.get("method") == "GET" and \
            headers.get("sec-fetch-mode") == "navigate" and dest == "document":
        return None
    return (f"{path} was asked for by a page of another website ({dest or 'a script'}, "
            f"Sec-Fetch-Site: {site}): only this app's own page may ask for it, and a link "
            "from elsewhere may only open the page itself")


def _hardened(send: Send) -> Send:
    """`send` with the no-framing headers added to the response, and Gradio's sign-in
    cookies (`SameSite=None`) made `SameSite=Lax`. A route's own Content-Security-Policy
    stays: a browser enforces every policy it is sent, so ours only adds to it."""

    async def hardened(message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, _lax(value) if name.lower() == b"set-cookie" else value)
                       for name, value in message.get("headers", [])
                       if name.lower() != b"x-frame-options"]
            message = {**message, "headers": headers + NO_FRAMING}
        await send(message)

    return hardened


def _lax(cookie: bytes) -> bytes:
    return SAME_SITE.sub(b"", cookie) + b"; SameSite=Lax"


def _is_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])}


async def _send_forbidden(scope: Scope, send: Send, reason: str) -> None:
    if _is_api(scope["path"]):
        error = ApiError(403, reason, code="forbidden_origin", kind="permission_error")
        body, kind = json.dumps(error.body()).encode(), b"application/json"
    else:
        body, kind = f"403 Forbidden: {reason}\n".encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", kind),
                            (b"content-length", str(len(body)).encode()), *NO_FRAMING]})
    await send({"type": "http.response.body", "body": body})


class ApiCors:
    """Opens /v1, and only /v1, to the web front ends named with --cors-origin, through
    Starlette's CORS middleware (preflight and response headers); every other path is
    passed on without CORS headers."""

    def __init__(self, app: ASGIApp, origins: Sequence[Origin]) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=[str(o) for o in origins],
                                   allow_methods=["GET", "POST"],
                                   allow_headers=["authorization", "content-type"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_api(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def guard(app: ASGIApp, access: Access) -> ASGIApp:
    """The server's whole front: Host and Origin checks, then CORS for /v1 if asked."""
    inner = ApiCors(app, access.cors_origins) if access.cors_origins else app
    return RequestGuard(inner, AllowedHosts.for_server(access.host, access.allowed_hosts),
                        access.cors_origins)
