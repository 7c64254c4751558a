"""Entity capabilities (XEP-0115) as the PEP service needs them: which
nodes a client wants notifications of (its `<node>+notify` features,
XEP-0163 §5.3), learnt from the caps hash in its presence.

A hash is resolved once (§6.2): the server asks the first client that
announces it for disco#info of `<node>#<ver>`, recomputes the verification
string (§5.1, §5.4) and caches the answer under the hash only when they
match; an answer that does not match serves that one client only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

if TYPE_CHECKING:
    from xmpp.router import Router

log = logging.getLogger(__name__)

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DATA = "jabber:x:data"
CAPS_TAG = f"{{{NS_CAPS}}}c"
NOTIFY = "+notify"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
HASHES = {"sha-1": hashlib.sha1, "sha-256": hashlib.sha256, "sha-512": hashlib.sha512}

# verified hash -> the nodes its clients want notifications of
_interests: dict[str, frozenset[str]] = {}
_pending: dict[str, asyncio.Future] = {}


def verification_string(query: Element) -> str:
    """XEP-0115 §5.1 (and §5.4's extended information)."""
    identities = sorted(
        (
            i.get("category", ""),
            i.get("type", ""),
            i.get(XML_LANG, ""),
            i.get("name", ""),
        )
        for i in query.findall(f"{{{NS_DISCO_INFO}}}identity")
    )
    parts = ["/".join(identity) + "<" for identity in identities]
    features = sorted(f.get("var", "") for f in query.findall(f"{{{NS_DISCO_INFO}}}feature"))
    parts.extend(f + "<" for f in features)
    forms = []
    for x in query.findall(f"{{{NS_DATA}}}x"):
        fields = {}
        form_type = ""
        for field in x.findall(f"{{{NS_DATA}}}field"):
            values = sorted(v.text or "" for v in field.findall(f"{{{NS_DATA}}}value"))
            if field.get("var") == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields[field.get("var", "")] = values
        forms.append((form_type, fields))
    for form_type, fields in sorted(forms, key=lambda f: f[0]):
        parts.append(form_type + "<")
        for var in sorted(fields):
            parts.append(var + "<")
            parts.extend(v + "<" for v in fields[var])
    return "".join(parts)


def caps_hash(query: Element, algorithm: str) -> str | None:
    digest = HASHES.get(algorithm)
    if digest is None:
        return None
    return base64.b64encode(digest(verification_string(query).encode()).digest()).decode()


def interests_of(query: Element) -> frozenset[str]:
    return frozenset(
        var[: -len(NOTIFY)]
        for f in query.findall(f"{{{NS_DISCO_INFO}}}feature")
        if (var := f.get("var", "")).endswith(NOTIFY)
    )


def known(ver: str) -> frozenset[str] | None:
    return _interests.get(ver)


async def resolve(router: Router, full_jid: str, node: str, ver: str, algorithm: str):
    """The +notify nodes behind `ver`, asking `full_jid` if the hash is new."""
    cached = _interests.get(ver)
    if cached is not None:
        return cached
    waiting = _pending.get(ver)
    if waiting is not None:
        try:
            return await asyncio.shield(waiting)
        except Exception:
            pass  # that client did not answer: ask this one
    future = asyncio.get_running_loop().create_future()
    _pending[ver] = future
    try:
        interests, verified = await _ask(router, full_jid, node, ver, algorithm)
        if verified:
            _interests[ver] = interests  # §6.2: cached once per hash
        future.set_result(interests)
        return interests
    except Exception as exc:
        future.set_exception(exc)
        future.exception()
        raise
    finally:
        if _pending.get(ver) is future:
            del _pending[ver]


async def _ask(router: Router, full_jid: str, node: str, ver: str, algorithm: str):
    iq = Element("{jabber:client}iq", {"type": "get", "to": full_jid})
    iq.append(Element(f"{{{NS_DISCO_INFO}}}query", {"node": f"{node}#{ver}"}))
    answer = await router.query(iq)
    query = answer.find(f"{{{NS_DISCO_INFO}}}query")
    if answer.get("type") != "result" or query is None:
        return frozenset(), False
    verified = caps_hash(query, algorithm) == ver
    if not verified:
        log.info("caps hash %s from %s does not verify; not cached", ver, full_jid)
    return interests_of(query), verified
