"""Who may use `--serve`: a token on any address but loopback (as Jupyter does), compared in constant time.

The token is accepted three ways, checked in this order: the query (`/?token=…`, what the printed URL
carries; the answer then sets a cookie, so the page's own requests need nothing more), the header
`Authorization: Bearer …` (scripts, curl), and that cookie. `/healthz` answers without a token, but then
only `{"ok": true}`. Nothing here ever prints or logs a token; the one place a token is shown is the URL
`run` prints when it generated that token itself, since nobody could know it otherwise.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Mapping
from urllib.parse import parse_qs, urlsplit

from .errors import EdgeError

TOKEN_ENV = "FASHION_EDGE_TOKEN"
MIN_TOKEN_CHARS = 16
# Characters that need no escaping in a URL, an HTTP header or a cookie value.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")
OPEN_PATHS = ("/healthz",)
COOKIE_PREFIX = "edge_token_"   # + the port: two servers on one host do not overwrite each other's cookie


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (only this device can connect)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False        # a host name other than localhost may resolve to anything


def new_token() -> str:
    """32 URL-safe characters (192 random bits)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Access:
    """The token the server asks for (None: anyone who can connect) and where it came from."""

    token: str | None
    source: str     # "generated", "--token", "$FASHION_EDGE_TOKEN", "--no-token" or "loopback"

    @property
    def shown(self) -> bool:
        """Whether the URL printed at start may carry the token (only one this process made up)."""
        return self.source == "generated"


def resolve(host: str, token: str | None = None, no_token: bool = False,
            environ: Mapping[str, str] | None = None) -> Access:
    """The access rule for a server bound to `host`: a token given (--token, then $FASHION_EDGE_TOKEN) is
    always required; otherwise loopback is open and any other address gets a generated one, unless
    `no_token`. EdgeError for a token that is too short or not URL-safe."""
    if token is not None and no_token:
        raise EdgeError("--token and --no-token contradict each other: give one")
    if no_token:
        return Access(None, "--no-token")
    source = "--token"
    if token is None and (environ or {}).get(TOKEN_ENV):
        token, source = environ[TOKEN_ENV], f"${TOKEN_ENV}"
    if token is None:
        return Access(None, "loopback") if is_loopback(host) else Access(new_token(), "generated")
    if not TOKEN_PATTERN.fullmatch(token):
        raise EdgeError(f"{source}: the token may only use letters, digits and . _ ~ - (it goes into URLs and "
                        "cookies as it is); make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if len(token) < MIN_TOKEN_CHARS:
        raise EdgeError(f"{source}: the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. "
                        "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    return Access(token, source)


@dataclass(frozen=True)
class Decision:
    """What the gate made of one request."""

    allowed: bool               # may it go on to its handler
    authorized: bool            # did it carry the right token (or is the server open)
    set_cookie: str | None      # a Set-Cookie value to send with the answer


class Gate:
    """Checks each request for the token; one per server."""

    def __init__(self, token: str | None, port: int) -> None:
        self._token = token.encode() if token is not None else None
        self.cookie_name = f"{COOKIE_PREFIX}{port}"

    @property
    def open(self) -> bool:
        return self._token is None

    def _matches(self, presented: str | None) -> bool:
        # compare_digest takes as long for a wrong first character as for a wrong last one.
        return presented is not None and hmac.compare_digest(presented.encode("utf-8", "replace"), self._token)

    def decide(self, target: str, headers: Mapping[str, str]) -> Decision:
        """`target` is the request line's path with its query; `headers` the request's headers."""
        if self._token is None:
            return Decision(True, True, None)
        url = urlsplit(target)
        from_query = parse_qs(url.query).get("token", [None])[-1]
        if self._matches(from_query):
            cookie = f"{self.cookie_name}={from_query}; Path=/; HttpOnly; SameSite=Strict"
            return Decision(True, True, cookie)
        scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(credentials.strip()):
            return Decision(True, True, None)
        if self._matches(_cookie(headers.get("Cookie"), self.cookie_name)):
            return Decision(True, True, None)
        return Decision(url.path in OPEN_PATHS, False, None)


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:     # a malformed header carries no token
        return None
    return jar[name].value if name in jar else None


def url_query(access: Access) -> str:
    """What the printed URL ends with: the token only when this process made it up."""
    return f"?token={access.token}" if access.shown else ""


def notice(access: Access, host: str, port: int) -> list[str]:
    """The lines `--serve` prints at start about who may connect (never a token that was given to it)."""
    if access.source == "generated":
        return [f"from another device: http://{host}:{port}/{url_query(access)}",
                f"the token was made at start; keep one across restarts with ${TOKEN_ENV} (or --token)"]
    if access.token is not None:
        return [f"a token is required (from {access.source}): open http://{host}:{port}/?token=YOUR-TOKEN once "
                "(the page keeps it in a cookie), or send 'Authorization: Bearer YOUR-TOKEN'"]
    if access.source == "--no-token":
        return [f"--no-token: no token is asked; anyone who can reach port {port} can watch the camera and send images"]
    return []


REFUSAL = ("a token is required on this address: open the URL edge-classify printed at start "
           "(http://HOST:PORT/?token=…), or send the header 'Authorization: Bearer TOKEN'")
