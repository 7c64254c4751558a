"""TURN allocations (RFC 8656) as state, without sockets.

This module owns what the server remembers about each allocation: its
5-tuple (transport + client address; §2 "5-tuple"), the user it belongs to,
its lifetime (§6, §7.2, §8), permissions by peer IP (§9: 300 s each),
channel bindings (§12: numbers 0x4000-0x4FFF, 600 s each), the bandwidth
quota (a token bucket) and the per-user allocation quota (§7.2 step 10:
486 Allocation Quota Reached). stun/service.py turns requests into calls on
it; stun/server.py owns the relay sockets, reached through `RelayEndpoint`.

Rules kept here:
- A permission is per IP address, not per port (§9.1); a channel binding
  installs or refreshes the permission for its peer's IP (§12.2).
- A channel number is bound to one peer and a peer to one channel, for the
  binding's whole life (§12.2: otherwise 400).
- Time is a number passed in (`now`), so tests drive expiry without sleeping.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

PERMISSION_LIFETIME = 300  # RFC 8656 §9
CHANNEL_LIFETIME = 600  # RFC 8656 §12
DEFAULT_ALLOCATION_LIFETIME = 600  # RFC 8656 §7.2 step 8 (default lifetime)
MIN_CHANNEL, MAX_CHANNEL = 0x4000, 0x4FFF  # RFC 8656 §12

Address = tuple[str, int]
# (transport, client address): the 5-tuple's variable part for one listener.
AllocationKey = tuple[str, Address]


class RelayEndpoint(Protocol):
    """A relay socket: the relayed transport address of one allocation."""

    address: Address  # what XOR-RELAYED-ADDRESS announces
    # Set by the service: called with (data, peer) for each datagram from a peer.
    on_datagram: Callable[[bytes, Address], None]

    def sendto(self, data: bytes, peer: Address) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class TokenBucket:
    """Bytes per second with a one-second burst; rate 0 means unlimited."""

    rate: int
    tokens: float = 0.0
    stamp: float = 0.0

    def take(self, size: int, now: float) -> bool:
        if not self.rate:
            return True
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


@dataclass(slots=True)
class Allocation:
    key: AllocationKey
    username: str
    user: str
    integrity_key: bytes
    relay: RelayEndpoint
    # Sends bytes to the client over the transport the allocation came in on.
    send_to_client: Callable[[bytes], None]
    expires: float
    transaction_id: bytes  # of the Allocate that made it (retransmissions, §7.2)
    bucket: TokenBucket
    stream: bool = False  # TCP/TLS: ChannelData is padded to 4 bytes (§12.5)
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)

    def has_permission(self, peer_ip: str, now: float) -> bool:
        expiry = self.permissions.get(peer_ip)
        return expiry is not None and expiry > now

    def permit(self, peer_ip: str, now: float) -> None:
        self.permissions[peer_ip] = now + PERMISSION_LIFETIME

    def bind_channel(self, number: int, peer: Address, now: float) -> bool:
        """§12.2: bind or refresh; False if the number or the peer is bound otherwise."""
        bound = self.channels.get(number)
        if bound is not None and bound[0] != peer and bound[1] > now:
            return False
        other = self.peer_channels.get(peer)
        if other is not None and other != number and self.channels[other][1] > now:
            return False
        if other is not None and other != number:
            del self.channels[other]
        if bound is not None and bound[0] != peer:
            self.peer_channels.pop(bound[0], None)
        self.channels[number] = (peer, now + CHANNEL_LIFETIME)
        self.peer_channels[peer] = number
        self.permit(peer[0], now)
        return True

    def channel_peer(self, number: int, now: float) -> Address | None:
        bound = self.channels.get(number)
        if bound is None or bound[1] <= now:
            return None
        return bound[0]

    def channel_for(self, peer: Address, now: float) -> int | None:
        number = self.peer_channels.get(peer)
        if number is None or self.channels[number][1] <= now:
            return None
        return number

    def prune(self, now: float) -> None:
        """Forget expired permissions and channel bindings."""
        for ip in [ip for ip, expiry in self.permissions.items() if expiry <= now]:
            del self.permissions[ip]
        for number in [n for n, (_, expiry) in self.channels.items() if expiry <= now]:
            peer, _ = self.channels.pop(number)
            self.peer_channels.pop(peer, None)


class QuotaExceeded(Exception):
    pass


@dataclass
class AllocationTable:
    """Every live allocation, by 5-tuple and by user."""

    max_per_user: int = 10
    allocations: dict[AllocationKey, Allocation] = field(default_factory=dict)
    per_user: dict[str, int] = field(default_factory=dict)

    def get(self, key: AllocationKey, now: float) -> Allocation | None:
        allocation = self.allocations.get(key)
        if allocation is not None and allocation.expires <= now:
            self.remove(allocation)
            return None
        return allocation

    def check_quota(self, user: str) -> None:
        if self.max_per_user and self.per_user.get(user, 0) >= self.max_per_user:
            raise QuotaExceeded(user)

    def add(self, allocation: Allocation) -> None:
        self.allocations[allocation.key] = allocation
        self.per_user[allocation.user] = self.per_user.get(allocation.user, 0) + 1

    def remove(self, allocation: Allocation) -> None:
        if self.allocations.get(allocation.key) is not allocation:
            return
        del self.allocations[allocation.key]
        left = self.per_user.get(allocation.user, 1) - 1
        if left > 0:
            self.per_user[allocation.user] = left
        else:
            self.per_user.pop(allocation.user, None)
        allocation.relay.close()

    def expire(self, now: float) -> int:
        """Remove allocations past their lifetime (§6); returns how many."""
        gone = [a for a in self.allocations.values() if a.expires <= now]
        for allocation in gone:
            self.remove(allocation)
        for allocation in self.allocations.values():
            allocation.prune(now)
        return len(gone)

    def close(self) -> None:
        for allocation in list(self.allocations.values()):
            self.remove(allocation)


def allocation_lifetime(requested: int | None, maximum: int) -> int:
    """§7.2 step 8 and §8: the requested lifetime, at least the default, at most the maximum."""
    if requested is None:
        return min(DEFAULT_ALLOCATION_LIFETIME, maximum)
    return min(max(requested, DEFAULT_ALLOCATION_LIFETIME), maximum)


def peer_allowed(ip: str, allow_private: bool) -> bool:
    """RFC 8656 §21.2.3-style restriction: without XMPP_TURN_ALLOW_PRIVATE_PEERS,
    a client may not reach loopback, private, link-local, multicast or
    unspecified addresses through the relay (they are the server's own
    network, not the Internet)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if address.is_unspecified or address.is_multicast:
        return False
    if allow_private:
        return True
    return address.is_global
