"""The incremental, hardened stream parser (RFC 6120 §4, §11).

Theory of operation: bytes go in through `feed()`; events come out as a
list: `StreamOpened(attrs)` for the stream header, `Element` for every
complete first-level child (a stanza or a negotiation element), and
`StreamClosed` for `</stream:stream>`. Nothing here does I/O.

Rules this file keeps:
- Restricted XML (§11.1): a DTD, an entity declaration, a comment, a
  processing instruction or a reference to an entity other than the five
  predefined ones raises StreamError('restricted-xml') (§4.9.3.18 names
  "XML entity reference" among them). Expat's parameter-entity parsing is
  off, so no external entity is ever read.
- Malformed XML raises StreamError('not-well-formed').
- Limits: a first-level element larger than `max_stanza_size` bytes, deeper
  than `max_depth` or with more than `max_attributes` attributes raises
  StreamError('policy-violation'), so memory stays bounded whatever a peer
  sends.
"""

from __future__ import annotations

import pyexpat
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .errors import StreamError
from .xml import NS_STREAMS

STREAM_TAG = f"{{{NS_STREAMS}}}stream"
_UNDEFINED_ENTITY = pyexpat.errors.codes[pyexpat.errors.XML_ERROR_UNDEFINED_ENTITY]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    attrs: dict[str, str]
    default_ns: str


class StreamClosed:
    __slots__ = ()


STREAM_CLOSED = StreamClosed()


def _clark(name: str) -> str:
    # Expat with namespace_separator="}" reports 'uri}local'.
    return "{" + name if "}" in name else name


class StreamParser:
    __slots__ = (
        "_parser",
        "_events",
        "_stack",
        "_depth",
        "_stanza_start",
        "_consumed",
        "_pending_ns",
        "max_stanza_size",
        "max_depth",
        "max_attributes",
        "opened",
        "closed",
    )

    def __init__(
        self, max_stanza_size: int = 262144, max_depth: int = 64, max_attributes: int = 64
    ) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_depth = max_depth
        self.max_attributes = max_attributes
        self._events: list = []
        self._stack: list[Element] = []
        self._depth = 0
        self._stanza_start = 0
        self._consumed = 0
        self._pending_ns = ""
        self.opened = False
        self.closed = False
        p = pyexpat.ParserCreate(None, "}")
        p.buffer_text = True
        p.ordered_attributes = False
        p.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.StartNamespaceDeclHandler = self._ns_decl
        p.StartDoctypeDeclHandler = self._restricted
        p.EntityDeclHandler = self._restricted
        p.UnparsedEntityDeclHandler = self._restricted
        p.NotationDeclHandler = self._restricted
        p.ExternalEntityRefHandler = self._restricted
        p.CommentHandler = self._restricted
        p.ProcessingInstructionHandler = self._restricted
        p.SkippedEntityHandler = self._restricted
        self._parser = p

    def feed(self, data: bytes) -> list:
        """Parse `data`; return the events it completes. Raises StreamError."""
        if self.closed:
            return []
        try:
            self._parser.Parse(data, False)
        except pyexpat.ExpatError as exc:
            if exc.code == _UNDEFINED_ENTITY:
                # With no DTD allowed, any entity but the predefined five is
                # undefined: a restricted feature, not a typo (§11.1).
                raise StreamError(
                    "restricted-xml", "only the predefined entities are allowed"
                ) from None
            raise StreamError("not-well-formed", str(exc)) from None
        self._consumed += len(data)
        # §13.12: a peer may not grow one stanza (or an unfinished tag) without bound.
        if self._consumed - self._stanza_start > self.max_stanza_size:
            raise StreamError("policy-violation", "stanza too large")
        events, self._events = self._events, []
        return events

    def discard(self) -> None:
        """The stream is over (or restarted): drop the expat parser, whose
        handlers point back here, so that the pair is freed at once by
        reference counting rather than at the garbage collector's next full
        pass (a flood of short streams would otherwise pile up meanwhile)."""
        self.closed = True
        self._parser = None

    def _restricted(self, *args) -> None:
        raise StreamError("restricted-xml", "DTDs, entities, comments and PIs are not allowed")

    def _ns_decl(self, prefix: str | None, uri: str) -> None:
        if self._depth == 0 and not prefix:
            self._pending_ns = uri

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth = self._depth + 1
        if depth == 1:
            if _clark(name) != STREAM_TAG:
                raise StreamError("invalid-namespace", "the root must be <stream:stream/>")
            self.opened = True
            self._events.append(StreamOpened(attrs, self._pending_ns))
            self._stanza_start = self._parser.CurrentByteIndex
            return
        if depth > self.max_depth:
            raise StreamError("policy-violation", "elements nested too deeply")
        if depth == 2:
            self._stanza_start = self._parser.CurrentByteIndex
        if len(attrs) > self.max_attributes:
            raise StreamError("policy-violation", "too many attributes")
        if attrs and any("}" in key for key in attrs):
            attrs = {_clark(k): v for k, v in attrs.items()}
        el = Element(_clark(name), attrs)
        if depth > 2:
            self._stack[-1].append(el)
        self._stack.append(el)

    def _end(self, name: str) -> None:
        depth = self._depth
        self._depth = depth - 1
        if depth == 1:
            self.closed = True
            self._events.append(STREAM_CLOSED)
            return
        el = self._stack.pop()
        if depth == 2:
            end = self._parser.CurrentByteIndex
            # A stanza that arrived whole in one feed() is measured here; feed()
            # only sees the part of a stanza that is still unfinished.
            if end - self._stanza_start > self.max_stanza_size:
                raise StreamError("policy-violation", "stanza too large")
            self._events.append(el)
            self._stanza_start = end

    def _text(self, data: str) -> None:
        if self._depth < 2:
            return  # whitespace keepalives between stanzas (RFC 6120 §4.6.1)
        el = self._stack[-1]
        if len(el):
            last = el[-1]
            last.tail = (last.tail or "") + data
        else:
            el.text = (el.text or "") + data
