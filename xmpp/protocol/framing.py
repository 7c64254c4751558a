"""How a stream is framed on its transport: one XML document over TCP
(RFC 6120 §4), or one element per WebSocket message (RFC 7395 §3.3).

The session speaks in stream events and stanzas; a framing turns its stream
header, features, errors and closing into the transport's form, and gives
the parser that turns the transport's bytes back into the same events.
"""

from __future__ import annotations

import re

from .errors import StreamError
from .parser import STREAM_CLOSED, StreamOpened, StreamParser
from .xml import NS_CLIENT, NS_STREAMS, Element

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
OPEN_TAG = f"{{{NS_FRAMING}}}open"
CLOSE_TAG = f"{{{NS_FRAMING}}}close"
# The start tag's name of a stanza serialised for a jabber:client stream.
_STANZA_NAME = re.compile(rb"<(?:message|presence|iq)(?=[ />])")
_WRAPPER = f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>".encode()


class StreamFraming:
    """RFC 6120 over TCP: one long document."""

    def parser(self, max_stanza_size: int, max_depth: int, max_attributes: int):
        return StreamParser(max_stanza_size, max_depth, max_attributes)

    def header(self, attributes: str, namespace: str = NS_CLIENT) -> bytes:
        # `namespace`: the stream's content namespace (jabber:client, jabber:server...).
        return (
            f"<?xml version='1.0'?><stream:stream xmlns='{namespace}' "
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

    def header(self, attributes: str, namespace: str = NS_CLIENT) -> bytes:
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
        name = _STANZA_NAME.match(data)
        if name is None:
            return data
        end = name.end()
        return b"".join((data[:end], b' xmlns="jabber:client"', data[end:]))


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

    def discard(self) -> None:
        self.closed = True
        self._inner.discard()

    def feed(self, frame: bytes) -> list:
        if self.closed:
            return []
        if frame[:1] != b"<":  # rare: leading whitespace, or an empty frame
            frame = frame.lstrip()
            if not frame:
                return []
        if frame.startswith(b"<?xml"):
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


NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
BODY_TAG = f"{{{NS_HTTPBIND}}}body"
_BODY_WRAPPER = f"<stream:stream xmlns='{NS_HTTPBIND}' xmlns:stream='{NS_STREAMS}'>".encode()


def parse_bosh_body(data: bytes, max_stanza_size: int, max_depth: int, max_attributes: int):
    """The <body/> of one BOSH request (XEP-0124 §4), parsed by the hardened
    StreamParser (no DTD, entities, comments or PIs) with the stream limits;
    raises StreamError for anything but one well-formed <body/>."""
    data = data.strip()
    if data.startswith(b"<?xml"):  # an XML declaration may open the HTTP body
        data = data[data.find(b"?>") + 2 :] if b"?>" in data else data
    parser = StreamParser(max_stanza_size, max_depth + 1, max_attributes)
    parser.feed(_BODY_WRAPPER)
    events = parser.feed(data)
    if len(events) != 1 or not isinstance(events[0], Element) or events[0].tag != BODY_TAG:
        raise StreamError("not-well-formed", "a BOSH request is exactly one <body/>")
    return events[0]


class BoshFraming(WebSocketFraming):
    """XEP-0206: the stream lives in BOSH <body/> wrappers. There is no stream
    header or closing tag on the wire (§5, §6: the session creation response and
    type='terminate' stand for them); features, errors and stanzas declare their
    namespaces as WebSocket frames do (§8: stanzas are qualified by jabber:client)."""

    def parser(self, max_stanza_size: int, max_depth: int, max_attributes: int):
        return BoshParser()

    def header(self, attributes: str, namespace: str = NS_CLIENT) -> bytes:
        return b""

    def close(self) -> bytes:
        return b""


class BoshParser:
    """Turns the <body/> a BOSH request carries (already parsed, by
    parse_bosh_body) into the events of StreamParser: the session creation
    request and xmpp:restart='true' (XEP-0206 §5) open the stream, the children
    are the stanzas, type='terminate' (XEP-0124 §13) closes the stream."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    def discard(self) -> None:
        self.closed = True

    def feed(self, body: Element) -> list:
        if self.closed:
            return []
        events: list = []
        if body.get("sid") is None or body.get(f"{{{NS_XBOSH}}}restart") == "true":
            attrs = {"version": body.get(f"{{{NS_XBOSH}}}version", "1.0")}
            for name in ("to", "from"):
                if body.get(name) is not None:
                    attrs[name] = body.get(name)
            events.append(StreamOpened(attrs, NS_CLIENT))
        for child in body:
            _qualify(child)
            events.append(child)
        if body.get("type") == "terminate":
            self.closed = True
            events.append(STREAM_CLOSED)
        return events


def _qualify(element: Element) -> None:
    """Elements a careless client left in the httpbind namespace are jabber:client."""
    prefix = f"{{{NS_HTTPBIND}}}"
    for el in element.iter():
        if el.tag.startswith(prefix):
            el.tag = f"{{{NS_CLIENT}}}" + el.tag[len(prefix) :]
