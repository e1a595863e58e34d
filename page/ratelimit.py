"""Who a visitor is, and how much they may ask for in a minute (corrections, batches of photos).

A visitor is their network address, never something the client chooses: Gradio's session id is new on every
REST call. The address is the peer of the connection, unless that peer is a trusted proxy: then it is the
rightmost X-Forwarded-For address that no trusted proxy added (the one the proxy itself saw; addresses a client
writes into the header stand to the left of it and are never read). Uvicorn, under Gradio, does this
replacement for the hosts named in FORWARDED_ALLOW_IPS; its own default trusts loopback, which would let any
local client pick its address, so `trusted_proxies` sets the default instead:
    FORWARDED_ALLOW_IPS set         the operator's list (addresses and networks, comma-separated) is used as is
    SPACE_ID set (a Hugging Face Space)   the private and loopback networks: the Space's proxy reaches the app
                                    from inside them, visitors never do
    neither                         no proxy: X-Forwarded-For is ignored
IPv6 visitors count by their /64 network (one household or server holds a whole /64).

Each limiter caps events per visitor AND for everyone together in any 60 s (a sliding window), so many
addresses cannot add up to unbounded work either.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

PROXY_ENV = "FORWARDED_ALLOW_IPS"   # uvicorn's own setting
PRIVATE_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
UNKNOWN_VISITOR = "unknown"         # no client address (an in-process call): all such calls count as one


class RateLimited(Exception):
    """Over a limit; `everyone` says whether it is the visitor's own limit or the one for all visitors."""

    def __init__(self, everyone: bool) -> None:
        super().__init__("everyone" if everyone else "visitor")
        self.everyone = everyone


def trusted_proxies(env: Mapping[str, str]) -> str:
    """The FORWARDED_ALLOW_IPS value to run under (see the module docstring); '' trusts no proxy."""
    if env.get(PROXY_ENV) is not None:
        return env[PROXY_ENV]
    return PRIVATE_NETWORKS if env.get("SPACE_ID") else ""


def visitor(request: Any) -> str:
    """The visitor behind a gr.Request (or anything with .client.host): an IPv4 address, an IPv6 /64."""
    host = getattr(getattr(request, "client", None), "host", None)
    if not host:
        return UNKNOWN_VISITOR
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class RateLimiter:
    """At most `per_visitor` events per visitor and `for_everyone` in all, in any 60 s (a sliding window).
    `what` names the events for the operator's log line when the cap for everyone is reached."""

    WINDOW = 60.0
    FORGET_AFTER = 10_000       # visitors remembered before idle ones are dropped (bounds memory)

    def __init__(self, per_visitor: int, for_everyone: int, what: str = "requests",
                 clock: Callable[[], float] = time.monotonic):
        self.per_visitor, self.for_everyone, self.what, self.clock = per_visitor, for_everyone, what, clock
        self._seen: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._logged_at = -self.WINDOW
        self._lock = threading.Lock()

    def take(self, visitor: str) -> None:
        """Count one event for `visitor`, or raise RateLimited (and count nothing) when over a limit."""
        now = self.clock()
        with self._lock:
            if len(self._seen) > self.FORGET_AFTER:
                self._seen = {v: q for v, q in self._seen.items() if q and now - q[-1] < self.WINDOW}
            stamps = self._seen.setdefault(visitor, deque())
            for window in (stamps, self._all):
                while window and now - window[0] >= self.WINDOW:
                    window.popleft()
            if len(stamps) >= self.per_visitor:
                raise RateLimited(everyone=False)
            if len(self._all) >= self.for_everyone:
                if now - self._logged_at >= self.WINDOW:   # at most one line a minute, however long the flood
                    log.warning("%d %s in the last minute, the cap for all visitors: more are refused for now",
                                self.for_everyone, self.what)
                    self._logged_at = now
                raise RateLimited(everyone=True)
            stamps.append(now)
            self._all.append(now)
