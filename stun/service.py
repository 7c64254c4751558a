"""What the STUN/TURN server answers: one message in, zero or more messages out.

This module owns the request processing of RFC 8489 §6.3 (Binding, unknown
comprehension-required attributes, the long-term credential mechanism of
§9.2) and RFC 8656 (Allocate §7.2, Refresh §8.2, CreatePermission §10.2,
Send/Data indications §11, ChannelBind §12.2, ChannelData §12.4-12.6). It
does no I/O of its own: the transport calls `handle()` with the bytes and a
`send` callable for the client, and relay sockets come from the
`open_relay` factory stun/server.py gives it.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import codec
from .codec import Message
from .credentials import ExpiredCredentials, NonceIssuer, rest_password, rest_user
from .turn import (
    MAX_CHANNEL,
    MIN_CHANNEL,
    Address,
    Allocation,
    AllocationTable,
    QuotaExceeded,
    RelayEndpoint,
    TokenBucket,
    allocation_lifetime,
    peer_allowed,
)

log = logging.getLogger(__name__)

UDP_TRANSPORT = 17  # RFC 8656 §18.7 REQUESTED-TRANSPORT protocol number

# Attributes understood per method (RFC 8489 §6.3.1: others in 0x0000-0x7FFF
# get 420 with UNKNOWN-ATTRIBUTES).
_AUTH = {
    codec.USERNAME,
    codec.MESSAGE_INTEGRITY,
    codec.MESSAGE_INTEGRITY_SHA256,
    codec.REALM,
    codec.NONCE,
}
BINDING_UNDERSTOOD = frozenset(
    _AUTH
    | {
        codec.MAPPED_ADDRESS,
        codec.XOR_MAPPED_ADDRESS,
        codec.CHANGE_REQUEST,  # RFC 5780 §7.2, only with no change asked (see binding())
        codec.PRIORITY,  # ICE (RFC 8445 §7.1.1): harmless on a server, ignored
        codec.USE_CANDIDATE,
    }
)
TURN_UNDERSTOOD = frozenset(
    _AUTH
    | {
        codec.CHANNEL_NUMBER,
        codec.LIFETIME,
        codec.XOR_PEER_ADDRESS,
        codec.DATA_ATTR,
        codec.REQUESTED_ADDRESS_FAMILY,
        codec.EVEN_PORT,
        codec.REQUESTED_TRANSPORT,
    }
)
SEND_UNDERSTOOD = frozenset({codec.XOR_PEER_ADDRESS, codec.DATA_ATTR, codec.DONT_FRAGMENT})

OpenRelay = Callable[[Address, bool], RelayEndpoint]
Send = Callable[[bytes], None]


@dataclass
class ServiceSettings:
    software: bytes = b"imserver"
    turn_enabled: bool = True
    realm: str = "localhost"
    secret: str = ""
    max_lifetime: int = 3600
    max_allocations_per_user: int = 10
    bandwidth: int = 0  # bytes/s per allocation, 0 = unlimited
    allow_private_peers: bool = False

    @classmethod
    def from_settings(cls) -> ServiceSettings:
        from django.conf import settings

        from .credentials import turn_secret

        return cls(
            software=settings.XMPP_STUN_SOFTWARE.encode(),
            turn_enabled=settings.XMPP_TURN_ENABLED,
            realm=settings.XMPP_TURN_REALM or settings.XMPP_DOMAIN,
            secret=turn_secret() if settings.XMPP_TURN_ENABLED else "",
            max_lifetime=settings.XMPP_TURN_MAX_LIFETIME,
            max_allocations_per_user=settings.XMPP_TURN_MAX_ALLOCATIONS_PER_USER,
            bandwidth=settings.XMPP_TURN_BANDWIDTH,
            allow_private_peers=settings.XMPP_TURN_ALLOW_PRIVATE_PEERS,
        )


class Reject(Exception):
    """A request's error answer (RFC 8489 §6.3.1.1), raised where it is decided."""

    def __init__(
        self,
        code: int,
        extra: list[tuple[int, bytes]] | None = None,
        *,
        cred: Credentials | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra or []
        # Set once the request is authenticated: the answer then carries
        # MESSAGE-INTEGRITY(-SHA256) with the same key (RFC 8489 §9.2.4).
        self.cred = cred
        self.reason = reason


@dataclass(slots=True)
class Credentials:
    username: str
    user: str
    key: bytes
    # RFC 8489 §9.2.4: the answer uses the integrity attribute the request used.
    sha256: bool = False


class StunService:
    """Binding for everyone; TURN for holders of REST-API credentials."""

    def __init__(
        self,
        config: ServiceSettings,
        open_relay: OpenRelay | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.open_relay = open_relay
        self.clock = clock
        self.wall_clock = wall_clock
        self.nonces = NonceIssuer()
        self.table = AllocationTable(max_per_user=config.max_allocations_per_user)
        self.realm_attr = (codec.REALM, config.realm.encode())
        self.stats = {"requests": 0, "errors": 0, "relayed": 0, "dropped": 0}

    # --- entry points -------------------------------------------------------

    def handle(self, data: bytes, client: Address, transport: str, send: Send) -> None:
        """One datagram, or one message framed off a stream, from a client."""
        if not data:
            return
        if 0x40 <= data[0] <= 0x7F:
            self.channel_data(data, client, transport)
            return
        try:
            message = codec.parse(data)
        except codec.NotStun:
            return
        except codec.MalformedMessage as exc:
            if exc.message is not None and exc.message.cls == codec.REQUEST:
                self.stats["errors"] += 1
                send(self._error(exc.message, Reject(400, reason=f"Bad Request: {exc}")))
            return
        if not message.magic and message.method != codec.BINDING:
            return  # RFC 8489 §12: only Binding existed before the magic cookie
        if message.cls == codec.REQUEST:
            self.stats["requests"] += 1
            try:
                answer = self.request(message, client, transport, send)
            except Reject as reject:
                self.stats["errors"] += 1
                answer = self._error(message, reject)
            except codec.MalformedMessage as exc:  # e.g. a USERNAME that is not UTF-8
                self.stats["errors"] += 1
                answer = self._error(message, Reject(400, reason=f"Bad Request: {exc}"))
            send(answer)
        elif message.cls == codec.INDICATION:
            self.indication(message, client, transport)
        # Responses and error responses from a client are not ours: dropped.

    def request(self, message: Message, client: Address, transport: str, send: Send) -> bytes:
        method = message.method
        if method == codec.BINDING:
            return self.binding(message, client)
        if not self.config.turn_enabled or method not in _TURN_METHODS:
            # RFC 8489 §6.3.1: a method we do not know gets 400.
            raise Reject(400, reason="Unknown method")
        unknown = codec.unknown_required(message, TURN_UNDERSTOOD)
        if unknown:
            raise Reject(420, [(codec.UNKNOWN_ATTRIBUTES, codec.unknown_attributes_value(unknown))])
        credentials = self.authenticate(message, client)
        handler = getattr(self, _TURN_METHODS[method])
        return handler(message, client, transport, send, credentials)

    # --- Binding (RFC 8489 §6.3.1, §12 for RFC 3489 clients) -----------------

    def binding(self, message: Message, client: Address) -> bytes:
        unknown = codec.unknown_required(message, BINDING_UNDERSTOOD)
        change = message.get(codec.CHANGE_REQUEST)
        if change is not None and (len(change) != 4 or change[3] & 0x06):
            # RFC 5780 §6.1: with no alternate address a change of address or
            # port cannot be honoured; the attribute counts as not understood.
            unknown.append(codec.CHANGE_REQUEST)
        if unknown:
            raise Reject(420, [(codec.UNKNOWN_ATTRIBUTES, codec.unknown_attributes_value(unknown))])
        host, port = client[0], client[1]
        if message.magic:
            attrs = [
                (
                    codec.XOR_MAPPED_ADDRESS,
                    codec.encode_xor_address(host, port, message.transaction_id),
                )
            ]
        else:
            # RFC 8489 §12: an RFC 3489 client reads MAPPED-ADDRESS (and, in
            # RFC 3489 §11.2, SOURCE-ADDRESS, our own transport address; we
            # have none to tell without the local address, so it is left out).
            attrs = [(codec.MAPPED_ADDRESS, codec.encode_address(host, port))]
        attrs.append((codec.SOFTWARE, self.config.software))
        return codec.build(
            codec.BINDING, codec.SUCCESS, message.transaction_id, attrs, fingerprint=message.magic
        )

    # --- long-term credentials (RFC 8489 §9.2.4) ------------------------------

    def authenticate(self, message: Message, client: Address) -> Credentials:
        has_integrity = message.integrity_offset >= 0 or message.integrity_sha256_offset >= 0
        if not has_integrity:
            raise Reject(401, self._challenge(client))
        username = message.text(codec.USERNAME)
        realm = message.text(codec.REALM)
        nonce = message.text(codec.NONCE)
        if username is None or realm is None or nonce is None:
            raise Reject(400, reason="Missing USERNAME, REALM or NONCE")
        if realm != self.config.realm or not self.nonces.check(nonce, client[0], self.wall_clock()):
            raise Reject(438, self._challenge(client))
        try:
            user = rest_user(username, self.wall_clock())
        except ExpiredCredentials:
            raise Reject(401, self._challenge(client), reason="Credentials expired") from None
        except ValueError:
            raise Reject(401, self._challenge(client), reason="Unknown username") from None
        password = rest_password(self.config.secret, username)
        key = codec.long_term_key(username, realm, password)
        if not codec.check_integrity(message, key):
            raise Reject(401, self._challenge(client), reason="Wrong credentials")
        return Credentials(username, user, key, message.integrity_sha256_offset >= 0)

    def _challenge(self, client: Address) -> list[tuple[int, bytes]]:
        return [
            self.realm_attr,
            (codec.NONCE, self.nonces.make(client[0], self.wall_clock()).encode()),
        ]

    # --- TURN requests ------------------------------------------------------

    def allocate(
        self, message: Message, client: Address, transport: str, send: Send, cred: Credentials
    ) -> bytes:
        """RFC 8656 §7.2."""
        now = self.clock()
        key = (transport, client)
        existing = self.table.get(key, now)
        if existing is not None:
            # §7.2 step 2: a retransmission gets the same success; anything else 437.
            if existing.transaction_id == message.transaction_id:
                return self._allocate_success(message, existing, client, now)
            raise Reject(437, cred=cred)
        requested = message.get(codec.REQUESTED_TRANSPORT)
        if requested is None or len(requested) != 4:
            raise Reject(400, cred=cred, reason="Missing REQUESTED-TRANSPORT")
        if requested[0] != UDP_TRANSPORT:
            raise Reject(442, cred=cred)
        family = message.get(codec.REQUESTED_ADDRESS_FAMILY)
        if family is not None and (len(family) != 4 or family[0] != codec.FAMILY_IPV4):
            raise Reject(440, cred=cred)  # IPv4 relays only
        try:
            self.table.check_quota(cred.user)
        except QuotaExceeded:
            raise Reject(486, cred=cred) from None
        even = message.get(codec.EVEN_PORT)
        lifetime = allocation_lifetime(_lifetime(message), self.config.max_lifetime)
        if self.open_relay is None:
            raise Reject(508, cred=cred)
        try:
            relay = self.open_relay(client, even is not None)
        except OSError:
            raise Reject(508, cred=cred) from None
        allocation = Allocation(
            key=key,
            username=cred.username,
            user=cred.user,
            integrity_key=cred.key,
            relay=relay,
            send_to_client=send,
            expires=now + lifetime,
            transaction_id=message.transaction_id,
            bucket=TokenBucket(self.config.bandwidth, float(self.config.bandwidth), now),
            stream=transport != "udp",
        )
        relay.on_datagram = lambda data, peer: self.from_peer(allocation, data, peer)
        self.table.add(allocation)
        log.info("TURN allocation %s for %s from %s", relay.address, cred.user, client)
        return self._allocate_success(message, allocation, client, now)

    def _allocate_success(
        self, message: Message, allocation: Allocation, client: Address, now: float
    ) -> bytes:
        tid = message.transaction_id
        lifetime = max(0, round(allocation.expires - now))
        attrs = [
            (codec.XOR_RELAYED_ADDRESS, codec.encode_xor_address(*allocation.relay.address, tid)),
            (codec.LIFETIME, struct.pack("!I", lifetime)),
            (codec.XOR_MAPPED_ADDRESS, codec.encode_xor_address(client[0], client[1], tid)),
            (codec.SOFTWARE, self.config.software),
        ]
        return codec.build(
            message.method,
            codec.SUCCESS,
            tid,
            attrs,
            integrity_key=allocation.integrity_key,
            integrity_sha256=message.integrity_sha256_offset >= 0,
        )

    def refresh(
        self, message: Message, client: Address, transport: str, send: Send, cred: Credentials
    ) -> bytes:
        """RFC 8656 §8.2: LIFETIME 0 deletes the allocation."""
        now = self.clock()
        allocation = self._allocation(transport, client, cred, now)
        requested = _lifetime(message)
        if requested == 0:
            self.table.remove(allocation)
            lifetime = 0
        else:
            lifetime = allocation_lifetime(requested, self.config.max_lifetime)
            allocation.expires = now + lifetime
        return self._success(message, cred, [(codec.LIFETIME, struct.pack("!I", lifetime))])

    def create_permission(
        self, message: Message, client: Address, transport: str, send: Send, cred: Credentials
    ) -> bytes:
        """RFC 8656 §10.2: every XOR-PEER-ADDRESS, all or none."""
        now = self.clock()
        allocation = self._allocation(transport, client, cred, now)
        peers = [
            self._peer(value, message, cred, allocation)
            for kind, value in message.attributes
            if kind == codec.XOR_PEER_ADDRESS
        ]
        if not peers:
            raise Reject(400, cred=cred, reason="Missing XOR-PEER-ADDRESS")
        for ip, _ in peers:
            allocation.permit(ip, now)
        return self._success(message, cred)

    def channel_bind(
        self, message: Message, client: Address, transport: str, send: Send, cred: Credentials
    ) -> bytes:
        """RFC 8656 §12.2."""
        now = self.clock()
        allocation = self._allocation(transport, client, cred, now)
        number_value = message.get(codec.CHANNEL_NUMBER)
        peer_value = message.get(codec.XOR_PEER_ADDRESS)
        if number_value is None or peer_value is None or len(number_value) != 4:
            raise Reject(400, cred=cred, reason="Missing CHANNEL-NUMBER")
        (number,) = struct.unpack_from("!H", number_value)
        if not MIN_CHANNEL <= number <= MAX_CHANNEL:
            raise Reject(400, cred=cred, reason="Bad channel number")
        peer = self._peer(peer_value, message, cred, allocation)
        if not allocation.bind_channel(number, peer, now):
            raise Reject(400, cred=cred, reason="Channel or peer bound otherwise")
        return self._success(message, cred)

    def _allocation(
        self, transport: str, client: Address, cred: Credentials, now: float
    ) -> Allocation:
        allocation = self.table.get((transport, client), now)
        if allocation is None:
            raise Reject(437, cred=cred)
        if allocation.username != cred.username:
            # §5: later requests use the credentials of the Allocate.
            raise Reject(441, cred=cred)
        return allocation

    def _peer(
        self, value: bytes, message: Message, cred: Credentials, allocation: Allocation
    ) -> Address:
        try:
            peer = codec.decode_xor_address(value, message.transaction_id)
        except ValueError:
            raise Reject(400, cred=cred, reason="Bad XOR-PEER-ADDRESS") from None
        if ":" in peer[0]:
            raise Reject(443, cred=cred)  # IPv4 relays only
        if not peer_allowed(peer[0], self.config.allow_private_peers):
            raise Reject(403, cred=cred)
        return peer

    def _success(
        self, message: Message, cred: Credentials, attrs: list[tuple[int, bytes]] | None = None
    ) -> bytes:
        attrs = [*(attrs or []), (codec.SOFTWARE, self.config.software)]
        return codec.build(
            message.method,
            codec.SUCCESS,
            message.transaction_id,
            attrs,
            integrity_key=cred.key,
            integrity_sha256=cred.sha256,
        )

    def _error(self, message: Message, reject: Reject) -> bytes:
        return codec.error_response(
            message,
            reject.code,
            reject.extra,
            reason=reject.reason,
            integrity_key=reject.cred.key if reject.cred else None,
            integrity_sha256=bool(reject.cred and reject.cred.sha256),
            software=self.config.software,
        )

    # --- relayed data (RFC 8656 §11, §12.4-12.6) -----------------------------

    def indication(self, message: Message, client: Address, transport: str) -> None:
        if message.method != codec.SEND or not self.config.turn_enabled:
            return  # e.g. a Binding indication (keep-alive, RFC 8489 §6.3.2)
        if codec.unknown_required(message, SEND_UNDERSTOOD):
            return  # §6.3.2: an indication with unknown attributes is discarded
        now = self.clock()
        allocation = self.table.get((transport, client), now)
        peer_value = message.get(codec.XOR_PEER_ADDRESS)
        data = message.get(codec.DATA_ATTR)
        if allocation is None or peer_value is None or data is None:
            return
        try:
            peer = codec.decode_xor_address(peer_value, message.transaction_id)
        except ValueError:
            return
        # §11.2: only to peers with a permission.
        if not allocation.has_permission(peer[0], now):
            self.stats["dropped"] += 1
            return
        self._to_peer(allocation, data, peer, now)

    def channel_data(self, data: bytes, client: Address, transport: str) -> None:
        """§12.6: ChannelData from the client, to the channel's peer."""
        if len(data) < 4:
            return
        number, length = struct.unpack_from("!HH", data)
        if length > len(data) - 4:
            return
        now = self.clock()
        allocation = self.table.get((transport, client), now)
        if allocation is None:
            return
        peer = allocation.channel_peer(number, now)
        if peer is None:
            self.stats["dropped"] += 1
            return
        self._to_peer(allocation, data[4 : 4 + length], peer, now)

    def _to_peer(self, allocation: Allocation, data: bytes, peer: Address, now: float) -> None:
        if not allocation.bucket.take(len(data), now):
            self.stats["dropped"] += 1
            return
        self.stats["relayed"] += 1
        allocation.relay.sendto(data, peer)

    def from_peer(self, allocation: Allocation, data: bytes, peer: Address) -> None:
        """§11.3, §12.5: a datagram at the relayed address, to the client."""
        now = self.clock()
        if allocation.expires <= now or not allocation.has_permission(peer[0], now):
            self.stats["dropped"] += 1
            return
        if not allocation.bucket.take(len(data), now):
            self.stats["dropped"] += 1
            return
        number = allocation.channel_for(peer, now)
        if number is not None:
            message = struct.pack("!HH", number, len(data)) + data
            if allocation.stream and len(message) % 4:
                message += b"\0" * (4 - len(message) % 4)
        else:
            tid = _transaction_id()
            message = codec.build(
                codec.DATA,
                codec.INDICATION,
                tid,
                [
                    (codec.XOR_PEER_ADDRESS, codec.encode_xor_address(peer[0], peer[1], tid)),
                    (codec.DATA_ATTR, data),
                ],
                fingerprint=False,
            )
        self.stats["relayed"] += 1
        allocation.send_to_client(message)

    def expire(self) -> int:
        return self.table.expire(self.clock())

    def close(self) -> None:
        self.table.close()


_TURN_METHODS = {
    codec.ALLOCATE: "allocate",
    codec.REFRESH: "refresh",
    codec.CREATE_PERMISSION: "create_permission",
    codec.CHANNEL_BIND: "channel_bind",
}


def _lifetime(message: Message) -> int | None:
    value = message.get(codec.LIFETIME)
    if value is None or len(value) != 4:
        return None
    return struct.unpack("!I", value)[0]


def _transaction_id() -> bytes:
    import os

    return os.urandom(12)
