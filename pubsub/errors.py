"""Pubsub's stanza errors: a defined condition plus an application-specific
condition in http://jabber.org/protocol/pubsub#errors (XEP-0060 §6-§8, §14),
built in one place like the core's StanzaError."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.errors import StanzaError

NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"


class PubsubError(StanzaError):
    """e.g. PubsubError("conflict", "precondition-not-met") (§7.1.5), or
    PubsubError("feature-not-implemented", "unsupported", feature="purge-nodes")."""

    def __init__(
        self,
        condition: str,
        pubsub_condition: str,
        feature: str = "",
        text: str = "",
        error_type: str | None = None,
    ) -> None:
        super().__init__(condition, text, error_type)
        self.pubsub_condition = pubsub_condition
        self.feature = feature

    def to_element(self, ns: str) -> Element:
        el = super().to_element(ns)
        attrs = {"feature": self.feature} if self.feature else {}
        SubElement(el, f"{{{NS_PUBSUB_ERRORS}}}{self.pubsub_condition}", attrs)
        return el
