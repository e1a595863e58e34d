"""Who a visitor is (their address; the forwarded one only from a trusted proxy) and the per-minute caps."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from page.ratelimit import PRIVATE_NETWORKS, UNKNOWN_VISITOR, RateLimited, RateLimiter, trusted_proxies, visitor


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request_from(host: str | None) -> SimpleNamespace:
    """What gr.Request exposes of the connection: .client.host (uvicorn has applied X-Forwarded-For by then)."""
    return SimpleNamespace(client=SimpleNamespace(host=host) if host is not None else None)


def refused(limiter: RateLimiter, who: str) -> bool | None:
    """None when `who` may go on; else whether the cap for everyone (True) or their own (False) stopped them."""
    try:
        limiter.take(who)
    except RateLimited as e:
        return e.everyone
    return None


def test_each_visitor_has_a_sliding_minute():
    clock = Clock()
    limiter = RateLimiter(3, 100, clock=clock)
    assert [refused(limiter, "a") for _ in range(4)] == [None, None, None, False]
    assert refused(limiter, "b") is None                                # others are not held back
    clock.now += 59
    assert refused(limiter, "a") is False                               # refusals are not counted...
    clock.now += 1.5
    assert [refused(limiter, "a") for _ in range(4)] == [None, None, None, False]   # ...a minute after the first


def test_everyone_together_has_a_cap_too_and_the_operator_hears_of_it_once_a_minute(caplog):
    clock = Clock()
    limiter = RateLimiter(2, 5, "corrections", clock=clock)
    with caplog.at_level(logging.WARNING, logger="page.ratelimit"):
        assert [refused(limiter, f"v{i}") for i in range(8)] == [None] * 5 + [True] * 3
        assert refused(limiter, "v0") is True
        clock.now += 30
        assert refused(limiter, "new") is True
        clock.now += 31                                                 # the first five are a minute old
        assert [refused(limiter, f"w{i}") for i in range(6)] == [None] * 5 + [True]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["5 corrections in the last minute, the cap for all visitors: more are refused for now"] * 2


def test_idle_visitors_are_forgotten(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(RateLimiter, "FORGET_AFTER", 10)
    limiter = RateLimiter(1, 11, clock=clock)
    for i in range(11):
        limiter.take(f"v{i}")
    assert refused(limiter, "over-the-cap-for-everyone") is True      # remembered with no event at all
    clock.now += 61
    limiter.take("late")
    assert set(limiter._seen) == {"late"}


@pytest.mark.parametrize("host, who", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),      # one /64 is one household or server
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),                           # IPv4 seen over IPv6
    ("testclient", "testclient"),
    ("", UNKNOWN_VISITOR),
    (None, UNKNOWN_VISITOR),
])
def test_a_visitor_is_their_address(host, who):
    assert visitor(request_from(host)) == who
    assert visitor(None) == UNKNOWN_VISITOR


def test_forwarded_addresses_are_trusted_only_from_a_proxy_we_know():
    assert trusted_proxies({}) == ""                                    # locally: nobody, not even loopback
    assert trusted_proxies({"SPACE_ID": "you/animals"}) == PRIVATE_NETWORKS
    assert trusted_proxies({"SPACE_ID": "you/animals", "FORWARDED_ALLOW_IPS": "10.1.2.3"}) == "10.1.2.3"
    assert trusted_proxies({"FORWARDED_ALLOW_IPS": ""}) == ""           # the operator may turn it off on a Space
    assert "127.0.0.0/8" in PRIVATE_NETWORKS and "10.0.0.0/8" in PRIVATE_NETWORKS


def test_uvicorn_reads_the_rightmost_address_no_trusted_proxy_added():
    """What the app relies on: uvicorn's ProxyHeadersMiddleware, under our setting, as a Space would see it."""
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    on_space = _TrustedHosts(trusted_proxies({"SPACE_ID": "you/animals"}))
    assert "10.16.3.80" in on_space and "203.0.113.7" not in on_space
    assert on_space.get_trusted_client_address("198.51.100.1, 203.0.113.7, 10.16.3.80")[0] == "203.0.113.7"
    local = _TrustedHosts(trusted_proxies({}))
    assert "127.0.0.1" not in local                                     # so a local client's header is ignored
