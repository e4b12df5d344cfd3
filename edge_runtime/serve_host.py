"""Which `Host` headers `--serve` answers: a defence against DNS rebinding, as Jupyter's Host check.

A web page on attacker.example can point its own name at 127.0.0.1 (or at the Pi's address) after it has
loaded, and then read this server's answers as if they were its own: the browser sees one origin. The
browser still sends `Host: attacker.example`, so the server answers only requests that name it:
- always: `localhost` and any loopback address (127.0.0.0/8, [::1]);
- bound to a network address: the bound address, the machine's host names (`socket.gethostname()`, its FQDN,
  `<hostname>.local` for mDNS, e.g. raspberrypi.local) and, bound to 0.0.0.0, any address of this machine
  (an address literal cannot be rebound: it is what the user typed);
- whatever `--allow-host NAME` adds (a reverse proxy's name).
The port in the header does not matter (a proxy may send its own); a missing or repeated Host is refused.
Nothing here looks at the token (edge_runtime.serve_auth); the Host is checked first.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Iterable, Sequence

from .errors import EdgeError

# A DNS name (letters, digits, hyphens, underscores, dots) or a bracketed IPv6 address, then an optional port.
_HOST = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?")
WILDCARD = ("0.0.0.0", "")


def split_host(value: str) -> str | None:
    """'Raspberrypi.local:8080' → 'raspberrypi.local', '[::1]:8080' → '::1'; None when it is no host."""
    match = _HOST.fullmatch(value.strip())
    if match is None:
        return None
    name = match["name"].strip("[]").lower().rstrip(".")    # 'localhost.' is 'localhost'
    return name or None


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def machine_names(hostname: str | None = None) -> set[str]:
    """This machine's names: its host name, FQDN and mDNS name (`<hostname>.local`), lower case."""
    hostname = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
    short = hostname.split(".", 1)[0]
    names = {hostname, short, f"{short}.local"}
    try:
        names.add(socket.getfqdn(hostname).lower().rstrip("."))
    except OSError:      # no resolver: the other names still hold
        pass
    return {n for n in names if n and _address(n) is None}


def is_local_address(address: str) -> bool:
    """True when this machine has `address` (binding a socket to it succeeds); asked at each request, so an
    address the Pi got after start (a new DHCP lease, Wi-Fi joined) counts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def check_allowed(names: Iterable[str]) -> list[str]:
    """The `--allow-host` values as names; EdgeError for one that is not a host name or address."""
    out = []
    for value in names:
        name = split_host(value)
        if name is None:
            raise EdgeError(f"--allow-host {value!r}: expected a host name or address as a browser sends it in "
                            "the Host header, e.g. proxy.example or pi.example.org (no scheme, no path)")
        out.append(name)
    return out


class HostRule:
    """Decides whether a request's Host header names this server; one per server."""

    def __init__(self, bind_host: str, allowed: Sequence[str] = (), hostname: str | None = None) -> None:
        self.bind_host = bind_host
        self.network = not _is_loopback_bind(bind_host)
        self.names = {"localhost", *check_allowed(allowed)}
        if self.network:
            self.names |= machine_names(hostname)
            if bind_host not in WILDCARD:
                self.names.add(bind_host.strip("[]").lower())

    def allows(self, values: Sequence[str] | None) -> bool:
        """`values`: every Host header of the request (email.message's get_all; None when there is none)."""
        if not values or len(values) != 1:
            return False
        name = split_host(values[0])
        if name is None:
            return False
        if name in self.names:
            return True
        address = _address(name)
        if address is None:
            return False
        if address.is_loopback:
            return True
        return self.network and self.bind_host in WILDCARD and is_local_address(name)


def _is_loopback_bind(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    address = _address(host.strip("[]"))
    return address is not None and address.is_loopback


REFUSAL = ("this server answers only requests addressed to its own names (a defence against DNS rebinding): "
           "open it as http://localhost:PORT/, by this machine's host name or address, or start it with "
           "--allow-host NAME for a name in front of it (a reverse proxy)")
