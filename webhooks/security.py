"""Request-forgery guard for webhook URLs: refuse what points inside our own network.

Checked twice: when an endpoint is registered (a clear field error) and at every delivery,
after DNS resolution, on the address the socket actually connected to (a name that resolved to
a public address at registration and to 127.0.0.1 now is refused: DNS rebinding).

Refused: loopback, link-local (169.254/16, fe80::/10, where cloud metadata lives), private
ranges (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10), multicast, reserved, unspecified, and
the server's own host names (``PUBLIC_BASE_URL``, ``ALLOWED_HOSTS``). Only
``RELAY_WEBHOOKS_ALLOW_HOSTS`` (off by default; host names, addresses or networks) lets such a
target through, e.g. a receiver on 127.0.0.1 in tests or a trusted internal service.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UnsafeURL(ValueError):
    """The URL points somewhere we refuse to send requests to."""


ALLOWED_SCHEMES = ("http", "https")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _allow_entries() -> tuple[set[str], list]:
    names: set[str] = set()
    networks = []
    for entry in getattr(settings, "RELAY_WEBHOOKS_ALLOW_HOSTS", []) or []:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry)
    return names, networks


def _own_hosts() -> set[str]:
    hosts = {
        (urlsplit(settings.PUBLIC_BASE_URL).hostname or "").lower(),
        "localhost",
        "localhost.localdomain",
        socket.gethostname().lower(),
    }
    for host in settings.ALLOWED_HOSTS:
        host = host.strip().lower().strip("[]")
        if host and host != "*":
            hosts.add(host.lstrip("."))
    return {host for host in hosts if host}


def address_refusal(address: IPAddress) -> str:
    """Why requests to ``address`` are refused ('' when allowed)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    _, networks = _allow_entries()
    if any(address in network for network in networks):
        return ""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private or address in ipaddress.ip_network("100.64.0.0/10"):
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return ""


def _parse(url: str):
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL("Enter a valid URL.") from exc
    if parts.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL("Use an http:// or https:// URL.")
    if not parts.hostname:
        raise UnsafeURL("The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeURL("Put no user name or password in the URL; use the signing secret.")
    return parts.hostname.lower().rstrip("."), port or (443 if parts.scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The host {host} does not resolve.") from exc
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def url_check(url: str, *, resolve_host: bool = True) -> list[IPAddress]:
    """Raise ``UnsafeURL`` (with a message for the user) when ``url`` must not be called.

    Returns the addresses the host resolved to (empty when ``resolve_host`` is False).
    """
    host, port = _parse(url)
    names, networks = _allow_entries()
    if host in names:
        return []
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    elif host in _own_hosts():
        raise UnsafeURL(f"{host} is this server's own host: webhooks cannot point at Relay.")
    elif resolve_host:
        addresses = resolve(host, port)
    else:
        return []
    for address in addresses:
        why = address_refusal(address)
        if why:
            shown = "" if literal is not None else f" ({host} resolves to {address})"
            raise UnsafeURL(f"The URL points at {why}{shown}: refused to prevent request forgery.")
    allowed = literal is not None and any(literal in net for net in networks)
    if literal is not None and not allowed and str(literal) in _own_hosts():
        raise UnsafeURL(f"{host} is this server's own host: webhooks cannot point at Relay.")
    return addresses


def peer_check(host: str, peer: str) -> None:
    """The socket connected to ``peer``: refuse it unless allowed (after DNS, at send time)."""
    names, _ = _allow_entries()
    if host.lower() in names:
        return
    why = address_refusal(ipaddress.ip_address(peer.split("%")[0]))
    if why:
        raise UnsafeURL(f"{host} connected to {why} ({peer}): refused to prevent request forgery.")
