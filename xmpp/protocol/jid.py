"""JIDs: parsing and PRECIS normalisation (RFC 7622).

localpart: UsernameCaseMapped profile (§3.3); resourcepart: OpaqueString
profile (§3.4); domainpart: lower-cased, trailing dot removed, IDNA labels
checked (§3.2). Each part is at most 1023 octets. Parsing is cached, because
the same addresses come back on every stanza.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import precis_i18n

_USERNAME = precis_i18n.get_profile("UsernameCaseMapped")
_RESOURCE = precis_i18n.get_profile("OpaqueString")
MAX_PART_BYTES = 1023


class InvalidJID(ValueError):
    """The string is not a valid JID; answered with <jid-malformed/>."""


def nodeprep(localpart: str) -> str:
    """Normalise a localpart (an account name) or raise InvalidJID."""
    try:
        value = _USERNAME.enforce(localpart)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid localpart {localpart!r}: {exc}") from None
    # RFC 7622 §3.3.1: these characters are not allowed in a localpart.
    if any(c in value for c in "\"&'/:<>@"):
        raise InvalidJID(f"invalid character in localpart {localpart!r}")
    _check_length(value, "localpart")
    return value


def resourceprep(resource: str) -> str:
    try:
        value = _RESOURCE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid resourcepart: {exc}") from None
    _check_length(value, "resourcepart")
    return value


def nameprep(domain: str) -> str:
    value = domain.rstrip(".").lower() if domain.endswith(".") else domain.lower()
    if not value:
        raise InvalidJID("empty domainpart")
    if value.startswith("[") and value.endswith("]"):  # IPv6 literal
        return value
    for label in value.split("."):
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise InvalidJID(f"invalid domainpart {domain!r}")
        if any(c.isspace() or c in "@/<>&'\"\\:" or ord(c) < 0x21 for c in label):
            raise InvalidJID(f"invalid domainpart {domain!r}")
    _check_length(value, "domainpart")
    return value


def _check_length(value: str, what: str) -> None:
    if len(value.encode("utf-8")) > MAX_PART_BYTES:
        raise InvalidJID(f"{what} longer than {MAX_PART_BYTES} octets")


class JID(NamedTuple):
    """An immutable, normalised JID. `str(jid)` gives its canonical form."""

    local: str
    domain: str
    resource: str

    @staticmethod
    def parse(text: str) -> JID:
        return _parse(text)

    @property
    def bare(self) -> JID:
        return JID(self.local, self.domain, "") if self.resource else self

    @property
    def is_bare(self) -> bool:
        return not self.resource

    @property
    def is_full(self) -> bool:
        return bool(self.resource)

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        text = f"{self.local}@{self.domain}" if self.local else self.domain
        return f"{text}/{self.resource}" if self.resource else text


@functools.lru_cache(maxsize=65536)
def _parse(text: str) -> JID:
    # RFC 7622 §3.1: split at the first '/', then at the first '@' before it.
    bare, slash, resource = text.partition("/")
    if slash and not resource:
        raise InvalidJID("empty resourcepart")
    local, at, domain = bare.partition("@")
    if not at:
        local, domain = "", bare
    elif not local:
        raise InvalidJID("empty localpart")
    return JID(
        nodeprep(local) if local else "",
        nameprep(domain),
        resourceprep(resource) if resource else "",
    )
