"""The client address that failed token checks are counted against.

A forwarded header is believed only from a configured proxy (``ANNOLOOP_TRUSTED_PROXIES``):
anyone else could write a new address into it on every request and never be limited. The
answer is the rightmost hop that is not a trusted proxy, the last address a proxy of ours
saw; the hops left of it are whatever the client chose to send. uvicorn's
``ProxyHeadersMiddleware`` applies the same rule when ``annoloop api`` runs it
(``app.cli._run_api``); doing it here as well keeps the rule when the app is served another
way, and is idempotent after uvicorn (its answer is not a trusted proxy).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _trusted(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name or garbage is never one of our proxies
    return any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[str]) -> str:
    if peer is None:
        return "unknown"
    networks = trusted_networks(tuple(proxies))
    if not networks or not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer  # a chain of our own proxies only
