"""XML vocabulary of the protocol: namespaces, element building, serialisation.

Stanzas are xml.etree.ElementTree elements whose tags carry their namespace
in Clark notation (`{jabber:client}message`). Serialisation writes each
element's namespace as a default `xmlns` only where it differs from its
parent's, which is how XMPP peers expect stanzas to look (RFC 6120 §4.8).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

NS_CLIENT = "jabber:client"
NS_SERVER = "jabber:server"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_XML = "http://www.w3.org/XML/1998/namespace"

__all__ = ["Element", "SubElement", "element", "serialize", "split_tag", "escape_text"]


def element(tag: str, attrib: dict[str, str] | None = None, text: str | None = None) -> Element:
    """An element with optional attributes and text: element('{ns}x', {'a': 'b'}, 'hi')."""
    el = Element(tag, attrib or {})
    if text is not None:
        el.text = text
    return el


def split_tag(tag: str) -> tuple[str, str]:
    """'{ns}local' -> ('ns', 'local'); 'local' -> ('', 'local')."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def escape_text(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def escape_attr(text: str) -> str:
    text = escape_text(text)
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\n" in text or "\r" in text or "\t" in text:
        text = text.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return text


def serialize(el: Element, parent_ns: str = NS_CLIENT) -> bytes:
    """Serialise an element as it appears inside a stream whose default namespace is parent_ns."""
    parts: list[str] = []
    _write(el, parent_ns, parts)
    return "".join(parts).encode("utf-8")


def _write(el: Element, parent_ns: str, out: list[str]) -> None:
    tag = el.tag
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
    else:
        ns, local = "", tag
    out.append("<" + local)
    if ns != parent_ns:
        out.append(f' xmlns="{escape_attr(ns)}"')
    if el.attrib:
        extra = 0
        for name, value in el.attrib.items():
            if name[:1] == "{":
                attr_ns, _, attr_local = name[1:].partition("}")
                if attr_ns == NS_XML:
                    name = "xml:" + attr_local
                else:
                    extra += 1
                    prefix = f"ns{extra}"
                    out.append(f' xmlns:{prefix}="{escape_attr(attr_ns)}"')
                    name = f"{prefix}:{attr_local}"
            out.append(f' {name}="{escape_attr(value)}"')
    children = len(el)
    if not children and not el.text:
        out.append("/>")
    else:
        out.append(">")
        if el.text:
            out.append(escape_text(el.text))
        for child in el:
            _write(child, ns, out)
            if child.tail:
                out.append(escape_text(child.tail))
        out.append(f"</{local}>")
