"""Where webhooks may go: public addresses only, unless the deployment names a host.

A ``callback_url`` is an address a tenant makes the workers POST to, so an internal one (the
loopback, the cloud metadata address, private ranges) would let any API key reach services
behind the firewall. The host is checked twice: at submit, in every notation an address can be
written in, and at send time against the addresses the name resolves to then, which are the
ones connected to (a name may resolve differently later).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# Names that always mean this machine or its private network.
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


class CallbackRefused(ValueError):
    """The callback URL points at an internal address, or cannot be used."""


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if any(ip in net for net in _NAT64):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def is_internal(ip: IPAddress) -> bool:
    """Not a public unicast address: loopback, private, link-local, shared, reserved, ..."""
    ip = _embedded_ipv4(ip)
    return not ip.is_global or ip.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host denotes if it is an address literal in any notation that resolvers
    accept (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``, ``[::ffff:7f00:1]``), else
    None for a name."""
    bare = host.strip("[]").split("%", 1)[0]  # an IPv6 zone id does not change the address
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        # inet_aton takes the BSD forms (short, decimal, octal, hex) that getaddrinfo also does.
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _allowed(host: str, allowed_hosts: Collection[str]) -> bool:
    return host.lower().rstrip(".") in {name.lower().rstrip(".") for name in allowed_hosts}


def check_callback_url(url: str, allowed_hosts: Collection[str] = ()) -> None:
    """Raise CallbackRefused unless ``url`` is an http(s) URL whose host is public (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("must not carry a user name or password")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        raise CallbackRefused("has an invalid port") from None
    host = parts.hostname
    if _allowed(host, allowed_hosts):
        return
    address = literal_address(host)
    if address is not None and is_internal(address):
        raise CallbackRefused(f"points at an internal address ({address})")
    name = host.lower().rstrip(".")
    if address is None and (name == "localhost" or name.endswith(_INTERNAL_SUFFIXES)):
        raise CallbackRefused(f"points at an internal host ({host})")


@dataclass(frozen=True)
class Target:
    """Where to connect for a callback: the URL with the checked address in place of the name,
    and the name for the Host header and TLS (SNI and certificate check)."""

    url: str
    host: str
    address: str


def resolve_target(url: str, allowed_hosts: Collection[str] = ()) -> Target:
    """Resolve the callback's host now and check every address it has; raises CallbackRefused.

    The connection then goes to the checked address, so a name that resolves to a public address
    for the check and an internal one for the connection (DNS rebinding) gets nowhere.
    """
    check_callback_url(url, allowed_hosts)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallbackRefused(f"cannot resolve {host}: {exc}") from None
    addresses = [literal_address(str(info[4][0])) for info in infos]
    found = [a for a in addresses if a is not None]
    if not found:
        raise CallbackRefused(f"{host} has no address")
    if not _allowed(host, allowed_hosts):
        internal = [a for a in found if is_internal(a)]
        if internal:
            raise CallbackRefused(f"{host} resolves to an internal address ({internal[0]})")
    address = found[0]
    shown = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    return Target(urlunsplit(parts._replace(netloc=netloc)), host, str(address))
