"""How a stream is framed on its transport: one XML document over TCP
(RFC 6120 §4), or one element per WebSocket message (RFC 7395 §3.3).

The session speaks in stream events and stanzas; a framing turns its stream
header, features, errors and closing into the transport's form, and gives
the parser that turns the transport's bytes back into the same events.
"""

from __future__ import annotations

from .errors import StreamError
from .parser import STREAM_CLOSED, StreamOpened, StreamParser
from .xml import NS_CLIENT, NS_STREAMS, Element

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN_TAG = f"{{{NS_FRAMING}}}open"
CLOSE_TAG = f"{{{NS_FRAMING}}}close"
_STANZA_PREFIXES = (b"<message", b"<presence", b"<iq")
_WRAPPER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()


class StreamFraming:
    """RFC 6120 over TCP: one long document."""

    def parser(self, max_stanza_size: int, max_depth: int, max_attributes: int):
        return StreamParser(max_stanza_size, max_depth, max_attributes)

    def header(self, attributes: str) -> bytes:
        return (
            f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' "
            f"xmlns:stream='{NS_STREAMS}' {attributes}>"
        ).encode()

    def features(self, inner: bytes) -> bytes:
        return b"<stream:features>" + inner + b"</stream:features>"

    def error(self, inner: bytes) -> bytes:
        return inner  # written with the prefix the header declared

    def close(self) -> bytes:
        return b"</stream:stream>"

    def stanza(self, data: bytes) -> bytes:
        return data


class WebSocketFraming(StreamFraming):
    """RFC 7395 §3.3: <open/> and <close/>, and every message a whole element
    that declares its own namespaces."""

    def parser(self, max_stanza_size: int, max_depth: int, max_attributes: int):
        return FramedParser(max_stanza_size, max_depth, max_attributes)

    def header(self, attributes: str) -> bytes:
        return f"<open xmlns='{NS_FRAMING}' {attributes}/>".encode()

    def features(self, inner: bytes) -> bytes:
        return (
            f"<stream:features xmlns:stream='{NS_STREAMS}'>".encode()
            + inner
            + b"</stream:features>"
        )

    def error(self, inner: bytes) -> bytes:
        declared = f"<stream:error xmlns:stream='{NS_STREAMS}'>".encode()
        return inner.replace(b"<stream:error>", declared, 1)

    def close(self) -> bytes:
        return f"<close xmlns='{NS_FRAMING}'/>".encode()

    def stanza(self, data: bytes) -> bytes:
        # Stanzas are serialised for a jabber:client stream; a frame stands
        # alone, so it names its namespace (§3.3.3).
        if data.startswith(_STANZA_PREFIXES):
            end = data.index(b" ") if b" " in data[:10] else data.index(b">")
            return data[:end] + b' xmlns="jabber:client"' + data[end:]
        return data


class FramedParser:
    """Parses WebSocket messages, each exactly one element (RFC 7395 §3.3.3),
    into the events of StreamParser: <open/> is the stream header, <close/>
    the end of the stream. The hardened StreamParser does the XML, fed a
    stream wrapper first so that every frame is a first-level element."""

    __slots__ = ("_inner", "closed")

    def __init__(self, max_stanza_size: int, max_depth: int, max_attributes: int) -> None:
        self._inner = StreamParser(max_stanza_size, max_depth + 1, max_attributes)
        self._inner.feed(_WRAPPER)
        self.closed = False

    def feed(self, frame: bytes) -> list:
        if self.closed or not frame.strip():
            return []
        if frame.lstrip().startswith(b"<?xml"):
            # §3.3.3: no XML declaration in a frame.
            raise StreamError("not-well-formed", "an XML declaration inside a frame")
        events = self._inner.feed(frame)
        if len(events) != 1 or not isinstance(events[0], Element):
            raise StreamError("not-well-formed", "a WebSocket message is exactly one element")
        element = events[0]
        if element.tag == OPEN_TAG:
            if element.get("version", "1.0").partition(".")[0] != "1":
                raise StreamError("unsupported-version", "this server speaks XMPP 1.0")
            return [StreamOpened(dict(element.attrib), NS_CLIENT)]
        if element.tag == CLOSE_TAG:
            self.closed = True
            return [STREAM_CLOSED]
        return [element]
