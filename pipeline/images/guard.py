"""The SSRF guard of image fetching: which addresses an image URL may resolve to, and an HTTP
adapter whose connections resolve a host once, check every address and connect to the checked
one. Catalog dumps are untrusted input: without the guard a URL could reach loopback services,
the private network or the cloud metadata server. :class:`~pipeline.images.fetch.Fetcher`
mounts the adapter unless private addresses are allowed.
"""

from __future__ import annotations

import ipaddress
import socket

import requests
import urllib3


def is_public_address(address: str) -> bool:
    """Globally routable, also for IPv4 wrapped in IPv6 (mapped, 6to4, Teredo): loopback, private,
    link-local (cloud metadata), carrier-grade NAT, reserved and multicast are not."""
    ip = ipaddress.ip_address(address.split("%")[0])
    candidates = [ip]
    if ip.version == 6:
        candidates += [a for a in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]) if a]
    return all(c.is_global and not c.is_multicast for c in candidates)


class ForbiddenAddress(Exception):
    """Raised inside the HTTP client when a host resolves to an address the policy refuses."""


def guarded_adapter(resolve, policy, pool_maxsize: int) -> requests.adapters.HTTPAdapter:
    """An adapter whose connections resolve the host once, check every address against
    ``policy`` and connect to the checked address (no second lookup: DNS rebinding cannot swap
    in a private address between the check and the connection). TLS still verifies the name.
    A request sent through an environment proxy has its target's addresses checked before it
    leaves (the proxy resolves the name again, so rebinding there is not prevented)."""

    def checked(host: str, port: int) -> str:
        try:
            infos = resolve(host, port, 0, socket.SOCK_STREAM)
        except (UnicodeError, ValueError) as exc:
            raise ForbiddenAddress(f"invalid host name {host[:100]!r}: {exc}") from exc
        addresses = [info[4][0] for info in infos]
        refused = [a for a in addresses if not policy(a)]
        if refused or not addresses:
            raise ForbiddenAddress(f"{host} resolves to non-public address {refused[0] if refused else '?'}")
        return addresses[0]

    class GuardedHTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self):
            self._dns_host = checked(self._dns_host, self.port)
            return super()._new_conn()

    class GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
        def _new_conn(self):
            self._dns_host = checked(self._dns_host, self.port)
            return super()._new_conn()

    class GuardedHTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            # Through an HTTP(S)_PROXY the proxy connects, not this adapter's pools: check the
            # target's addresses here first (the proxy's own lookup is out of our hands).
            if requests.utils.select_proxy(request.url, kwargs.get("proxies") or {}):
                target = urllib3.util.parse_url(request.url)
                checked(target.host or "", target.port or (443 if target.scheme == "https" else 80))
            return super().send(request, **kwargs)

    adapter = GuardedAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}
    return adapter
