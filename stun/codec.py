"""STUN messages without I/O (RFC 8489, read by RFC 5389 and RFC 3489 clients too).

This module owns the wire format: the 20-byte header (§5), the message type
with its interleaved method and class bits (§5), attributes as
type-length-value padded to 4 bytes (§14), the (XOR-)MAPPED-ADDRESS
encodings (§14.1, §14.2), MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256
(§14.5, §14.6), FINGERPRINT (§14.7), ERROR-CODE (§14.8) and
UNKNOWN-ATTRIBUTES (§14.9). It takes bytes and gives a `Message`, or
takes a method, class and attributes and gives bytes; sockets live in
stun/server.py and TURN's state in stun/turn.py.

Theory of operation:
- `parse(data)` never raises anything but `MalformedMessage`, and only for
  data that has a STUN header; what is not STUN at all (first two bits set,
  shorter than a header, a length that does not match) raises `NotStun`,
  which the server drops without an answer (RFC 8489 §6.3: "silently
  discarded").
- A message without the magic cookie is an RFC 3489 request (§12): it is
  still parsed, and the answer carries MAPPED-ADDRESS rather than
  XOR-MAPPED-ADDRESS.
- Errors are values: `error_response()` builds any error answer in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER = struct.Struct("!HHI12s")
HEADER_SIZE = 20
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7: "STUN" in ASCII

# Methods (RFC 8489 §18.2, RFC 8656 §17).
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009

# Classes, already in their bit positions C1 (0x100) and C0 (0x010) (§5).
REQUEST = 0x000
INDICATION = 0x010
SUCCESS = 0x100
ERROR = 0x110

# Attributes (RFC 8489 §18.3, RFC 8656 §18, RFC 8445 §16.1, RFC 5780 §7).
MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
PADDING = 0x0026
RESPONSE_PORT = 0x0027
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
ICMP = 0x8004
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

# Reason phrases of the error codes we send (RFC 8489 §14.8, RFC 8656 §18).
REASONS = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02


class NotStun(ValueError):
    """Bytes that are not a STUN message at all: dropped without an answer."""


class MalformedMessage(ValueError):
    """A STUN header with a body that breaks §14's rules: a request gets 400."""

    def __init__(self, reason: str, message: Message | None = None) -> None:
        super().__init__(reason)
        self.message = message


@dataclass(slots=True)
class Message:
    """One parsed STUN message; attributes in wire order, values unpadded."""

    method: int
    cls: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)
    # RFC 8489 §12: False for an RFC 3489 message (no magic cookie); then the
    # transaction id is 16 bytes, the "cookie" included.
    magic: bool = True
    # Offsets of MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT, for verification.
    raw: bytes = b""
    integrity_offset: int = -1
    integrity_sha256_offset: int = -1

    def get(self, attr_type: int) -> bytes | None:
        """The first occurrence of an attribute (§14: later ones are ignored)."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def has(self, attr_type: int) -> bool:
        return any(kind == attr_type for kind, _ in self.attributes)

    def text(self, attr_type: int) -> str | None:
        value = self.get(attr_type)
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise MalformedMessage("attribute is not UTF-8", self) from exc


def message_type(method: int, cls: int) -> int:
    """§5: the method's 12 bits M11..M0 around the class bits C1 (bit 8), C0 (bit 4)."""
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def split_type(msg_type: int) -> tuple[int, int]:
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    return method, msg_type & 0x0110


def parse(data: bytes) -> Message:
    """Parse one whole STUN message (a datagram, or one framed off a stream)."""
    if len(data) < HEADER_SIZE:
        raise NotStun("shorter than a STUN header")
    msg_type, length, cookie, tid = HEADER.unpack_from(data)
    # §5: the two most significant bits are zero; §6 the length is a multiple
    # of 4 and covers the rest of the datagram exactly.
    if msg_type & 0xC000 or length & 3 or length + HEADER_SIZE != len(data):
        raise NotStun("not a STUN header")
    method, cls = split_type(msg_type)
    magic = cookie == MAGIC_COOKIE
    message = Message(method, cls, tid if magic else data[4:20], magic=magic, raw=bytes(data))
    offset = HEADER_SIZE
    end = len(data)
    seen_fingerprint = False
    while offset < end:
        if end - offset < 4:
            raise MalformedMessage("truncated attribute header", message)
        attr_type, attr_len = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        if start + attr_len > end:
            raise MalformedMessage("attribute longer than the message", message)
        if seen_fingerprint:
            # §14.7: FINGERPRINT is the last attribute.
            raise MalformedMessage("attribute after FINGERPRINT", message)
        value = bytes(data[start : start + attr_len])
        if attr_type == MESSAGE_INTEGRITY and message.integrity_offset < 0:
            message.integrity_offset = offset
        elif attr_type == MESSAGE_INTEGRITY_SHA256 and message.integrity_sha256_offset < 0:
            message.integrity_sha256_offset = offset
        elif attr_type == FINGERPRINT:
            seen_fingerprint = True
            if attr_len != 4 or not _fingerprint_ok(data, offset, value):
                # RFC 8489 §7.3: a wrong FINGERPRINT means "not STUN" (it may
                # be another protocol multiplexed on the port): discarded.
                raise NotStun("bad FINGERPRINT")
        # §14.5, §14.6: attributes after MESSAGE-INTEGRITY(-SHA256), other than
        # FINGERPRINT (and MI-SHA256 after MI), are ignored.
        if (
            (message.integrity_offset >= 0 and offset > message.integrity_offset)
            or message.integrity_sha256_offset >= 0
            and offset > message.integrity_sha256_offset
        ):
            if attr_type not in (FINGERPRINT, MESSAGE_INTEGRITY_SHA256):
                offset = start + ((attr_len + 3) & ~3)
                continue
        message.attributes.append((attr_type, value))
        offset = start + ((attr_len + 3) & ~3)
    if offset != end:
        raise MalformedMessage("padding past the end", message)
    return message


def _fingerprint_ok(data: bytes, offset: int, value: bytes) -> bool:
    # §14.7: the CRC covers the message up to FINGERPRINT, with the header's
    # length counting FINGERPRINT itself (it is the last attribute, so the
    # length on the wire already does).
    return (zlib.crc32(data[:offset]) ^ FINGERPRINT_XOR) == struct.unpack("!I", value)[0]


def unknown_required(message: Message, understood: frozenset[int]) -> list[int]:
    """§6.3.1: comprehension-required attributes (0x0000-0x7FFF) we do not know."""
    unknown = []
    for kind, _ in message.attributes:
        if kind < 0x8000 and kind not in understood and kind not in unknown:
            unknown.append(kind)
    return unknown


# --- building ----------------------------------------------------------------


def attribute(attr_type: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", attr_type, len(value)) + value + b"\0" * pad


def build(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    *,
    integrity_key: bytes | None = None,
    integrity_sha256: bool = False,
    fingerprint: bool = True,
) -> bytes:
    """Encode a message; MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT come last (§14.5-7).

    A 16-byte transaction id is an RFC 3489 one (cookie included) and is
    written as is."""
    body = b"".join(attribute(kind, value) for kind, value in attributes)
    msg_type = message_type(method, cls)
    if len(transaction_id) == 16:
        head_tail = transaction_id
    else:
        head_tail = MAGIC_COOKIE_BYTES + transaction_id
    if integrity_key is not None:
        # §14.5: HMAC over the message up to MESSAGE-INTEGRITY, with the
        # header's length already counting it.
        size = 32 if integrity_sha256 else 20
        kind = MESSAGE_INTEGRITY_SHA256 if integrity_sha256 else MESSAGE_INTEGRITY
        head = struct.pack("!HH", msg_type, len(body) + 4 + size) + head_tail
        digest = hmac.new(
            integrity_key, head + body, hashlib.sha256 if integrity_sha256 else hashlib.sha1
        ).digest()
        body += attribute(kind, digest)
    if fingerprint:
        head = struct.pack("!HH", msg_type, len(body) + 8) + head_tail
        crc = zlib.crc32(head + body) ^ FINGERPRINT_XOR
        return head + body + attribute(FINGERPRINT, struct.pack("!I", crc))
    return struct.pack("!HH", msg_type, len(body)) + head_tail + body


def error_response(
    request: Message,
    code: int,
    extra: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    *,
    reason: str | None = None,
    integrity_key: bytes | None = None,
    integrity_sha256: bool = False,
    software: bytes | None = None,
) -> bytes:
    """The error response to `request` (§6.3.1.1, ERROR-CODE per §14.8)."""
    phrase = (reason or REASONS.get(code, "Error")).encode()
    value = struct.pack("!HBB", 0, code // 100, code % 100) + phrase
    attrs = [(ERROR_CODE, value), *extra]
    if software:
        attrs.append((SOFTWARE, software))
    return build(
        request.method,
        ERROR,
        request.transaction_id,
        attrs,
        integrity_key=integrity_key,
        integrity_sha256=integrity_sha256,
    )


def unknown_attributes_value(kinds: list[int]) -> bytes:
    """§14.9: a list of 16-bit attribute types."""
    return b"".join(struct.pack("!H", kind) for kind in kinds)


def error_code(message: Message) -> int | None:
    value = message.get(ERROR_CODE)
    if value is None or len(value) < 4:
        return None
    return (value[2] & 0x7) * 100 + value[3]


# --- addresses ---------------------------------------------------------------


def encode_address(host: str, port: int) -> bytes:
    """§14.1 MAPPED-ADDRESS value."""
    ip = ipaddress.ip_address(host)
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + ip.packed


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """§14.2 XOR-MAPPED-ADDRESS value (also XOR-PEER-/XOR-RELAYED-ADDRESS)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        xaddr = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, FAMILY_IPV4, xport, xaddr)
    mask = int.from_bytes(MAGIC_COOKIE_BYTES + transaction_id, "big")
    return struct.pack("!BBH", 0, FAMILY_IPV6, xport) + (int(ip) ^ mask).to_bytes(16, "big")


def decode_address(value: bytes) -> tuple[str, int]:
    if len(value) < 8:
        raise ValueError("address too short")
    _, family, port = struct.unpack_from("!BBH", value)
    if family == FAMILY_IPV4 and len(value) == 8:
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == FAMILY_IPV6 and len(value) == 20:
        return str(ipaddress.IPv6Address(value[4:20])), port
    raise ValueError("unknown address family")


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    if len(value) < 8:
        raise ValueError("address too short")
    _, family, xport = struct.unpack_from("!BBH", value)
    port = xport ^ (MAGIC_COOKIE >> 16)
    if family == FAMILY_IPV4 and len(value) == 8:
        (xaddr,) = struct.unpack_from("!I", value, 4)
        return str(ipaddress.IPv4Address(xaddr ^ MAGIC_COOKIE)), port
    if family == FAMILY_IPV6 and len(value) == 20:
        mask = int.from_bytes(MAGIC_COOKIE_BYTES + transaction_id, "big")
        return str(ipaddress.IPv6Address(int.from_bytes(value[4:20], "big") ^ mask)), port
    raise ValueError("unknown address family")


# --- integrity (§9.2 long-term credentials, §14.5, §14.6) --------------------


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """§9.2.2 with the MD5 password algorithm (the default, and RFC 5389's)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def check_integrity(message: Message, key: bytes) -> bool:
    """True if the message's MESSAGE-INTEGRITY-SHA256, else MESSAGE-INTEGRITY, matches."""
    data = message.raw
    if message.integrity_sha256_offset >= 0:
        offset, digest_name = message.integrity_sha256_offset, hashlib.sha256
    elif message.integrity_offset >= 0:
        offset, digest_name = message.integrity_offset, hashlib.sha1
    else:
        return False
    (attr_len,) = struct.unpack_from("!H", data, offset + 2)
    if digest_name is hashlib.sha1 and attr_len != 20:
        return False
    # §14.6: SHA-256 may be truncated to 16 bytes or more, a multiple of 4.
    if digest_name is hashlib.sha256 and (attr_len < 16 or attr_len > 32 or attr_len % 4):
        return False
    received = data[offset + 4 : offset + 4 + attr_len]
    head = struct.pack("!HH", struct.unpack_from("!H", data)[0], offset + 4 + attr_len - 20)
    computed = hmac.new(key, head + data[4:offset], digest_name).digest()[:attr_len]
    return hmac.compare_digest(received, computed)
