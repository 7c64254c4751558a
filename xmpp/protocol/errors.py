"""Errors as values of the protocol: stream errors (RFC 6120 §4.9) and stanza
errors (RFC 6120 §8.3), each built in one place.
"""

from __future__ import annotations

from .xml import NS_STANZA_ERRORS, NS_STREAM_ERRORS, Element, SubElement, escape_text

# RFC 6120 §8.3.3: the error type each defined condition normally carries.
STANZA_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StreamError(Exception):
    """A condition that ends the stream (RFC 6120 §4.9.3); raised by the protocol layer,
    turned into <stream:error/> followed by </stream:stream> by the session."""

    def __init__(self, condition: str, text: str = "", application: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        # RFC 6120 §4.9.4: an application-specific condition, as XML (e.g.
        # XEP-0198's <handled-count-too-high/>).
        self.application = application

    def to_bytes(self) -> bytes:
        # Written with the `stream` prefix our stream header declares.
        text = (
            f'<text xmlns="{NS_STREAM_ERRORS}">{escape_text(self.text)}</text>' if self.text else ""
        )
        return (
            f'<stream:error><{self.condition} xmlns="{NS_STREAM_ERRORS}"/>{text}'
            f"{self.application}</stream:error>"
        ).encode()


class StanzaError(Exception):
    """A stanza-level error (RFC 6120 §8.3); the stream goes on."""

    def __init__(self, condition: str, text: str = "", error_type: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.error_type = error_type or STANZA_ERROR_TYPES.get(condition, "cancel")

    def to_element(self, ns: str) -> Element:
        el = Element(f"{{{ns}}}error", {"type": self.error_type})
        SubElement(el, f"{{{NS_STANZA_ERRORS}}}{self.condition}")
        if self.text:
            SubElement(el, f"{{{NS_STANZA_ERRORS}}}text").text = self.text
        return el


def error_reply(stanza: Element, error: StanzaError) -> Element | None:
    """The error response to `stanza` (RFC 6120 §8.3.1), or None for an error stanza,
    which is never answered with another error."""
    if stanza.get("type") == "error":
        return None
    ns = stanza.tag[1:].partition("}")[0]
    reply = Element(stanza.tag, {"type": "error"})
    if stanza.get("id") is not None:
        reply.set("id", stanza.get("id"))
    if stanza.get("from"):
        reply.set("to", stanza.get("from"))
    if stanza.get("to"):
        reply.set("from", stanza.get("to"))
    # §8.3.1: the error stanza MAY include the original payload; we keep the
    # first child so that a client can correlate, and add the <error/>.
    if stanza.tag.endswith("}iq"):
        for child in stanza:
            reply.append(child)
            break
    reply.append(error.to_element(ns))
    return reply
