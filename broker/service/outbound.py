"""Where Tiers may send requests of its own: holders' endpoints, health probes, webhooks.

Organisations choose these URLs, so without a check Tiers could be made to reach its own
network (a cloud metadata service, an admin port) and report what answered. Addresses that are
not global (private, link-local, reserved…) are refused unless OUTBOUND_ALLOW_PRIVATE; the
loopback only with OUTBOUND_ALLOW_LOOPBACK (on by default for the demo and the tests, where
holders run on 127.0.0.1; off in production, see README). URLs are checked when registered
(literal addresses and `localhost`) and again when connecting (every address the name resolves
to). A name that resolves differently between that check and the connection (DNS rebinding)
is not covered; a deployment that fears it runs Tiers behind an egress proxy.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.settings import setting

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class Policy:
    loopback: bool
    private: bool


def policy() -> Policy:
    """The running app's policy (read it before handing work to threads)."""
    return Policy(bool(setting("OUTBOUND_ALLOW_LOOPBACK")), bool(setting("OUTBOUND_ALLOW_PRIVATE")))


def _refused(address: str, rules: Policy) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.is_loopback:
        return not rules.loopback
    return not ip.is_global and not rules.private


def registration_problem(url: str, rules: Policy) -> str | None:
    """Why Tiers may not be pointed at `url`, judged without DNS: literal addresses and
    local names. None when acceptable (the connection checks the resolved addresses)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in LOCAL_NAMES:
        return None if rules.loopback else f"{url}: Tiers does not call its own host."
    try:
        refused = _refused(host, rules)
    except ValueError:
        return None  # a name: checked at connection time
    return f"{url}: Tiers does not call private or reserved addresses." if refused else None


def connection_problem(url: str, rules: Policy) -> str | None:
    """Why Tiers must not connect to `url` now: a resolved address it may not reach."""
    parts = urlsplit(url)
    try:
        found = socket.getaddrinfo(parts.hostname or "", parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # unresolvable: the connection itself fails, as an unreachable service
    if any(_refused(str(info[4][0]), rules) for info in found):
        return "address not allowed"
    return None
