"""Private XML storage (XEP-0049): XML a user keeps on the server for itself.

Owns `{jabber:iq:private}query` IQs to the user's own bare JID (or without
'to'). A set stores each child under its namespace, replacing what was there
for that namespace; a get names one namespace and gets back what is stored,
or the empty element it asked with. Rules (XEP-0049 §2.3, §3, §4):

- only the account itself: another user's storage is <forbidden/>;
- a query without a child, or with a child in no namespace, is <not-acceptable/>;
- the reserved namespaces (jabber:*, http://jabber.org/*, vcard-temp) are
  <not-acceptable/>;
- a get names exactly one namespace, else <bad-request/>.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from asgiref.sync import sync_to_async
from defusedxml.ElementTree import fromstring
from django.contrib.auth import get_user_model
from django.db import transaction

from .models import PrivateXml
from .plugins import IqRequest, plugins
from .protocol.errors import StanzaError
from .protocol.xml import serialize, split_tag

NS_PRIVATE = "jabber:iq:private"
QUERY_TAG = f"{{{NS_PRIVATE}}}query"
RESERVED_PREFIXES = ("jabber:", "http://jabber.org/")
RESERVED_NAMESPACES = frozenset({"vcard-temp"})
# Stored fragments of one namespace are wrapped in this element to parse them back.
WRAPPER = "stored"


@plugins.iq(QUERY_TAG, types=("get", "set"), scopes=("account",), feature=NS_PRIVATE)
async def private_storage(request: IqRequest) -> Element | None:
    if request.to != request.sender.bare:
        raise StanzaError("forbidden", "private XML belongs to its owner only")
    by_namespace = _children_by_namespace(request.payload)
    if request.type == "set":
        await sync_to_async(_store)(request.sender.local, by_namespace)
        return None
    if len(by_namespace) != 1:
        raise StanzaError("bad-request", "ask for one namespace at a time")
    namespace, asked = next(iter(by_namespace.items()))
    stored = (
        await PrivateXml.objects.filter(user__username=request.sender.local, namespace=namespace)
        .values_list("xml", flat=True)
        .afirst()
    )
    query = Element(QUERY_TAG)
    if stored is None:
        query.append(Element(asked[0].tag))
    else:
        query.extend(fromstring(f"<{WRAPPER}>{stored}</{WRAPPER}>"))
    return query


def _children_by_namespace(query: Element) -> dict[str, list[Element]]:
    if len(query) == 0:
        raise StanzaError("not-acceptable", "name the namespace of the private XML")
    by_namespace: dict[str, list[Element]] = {}
    max_length = PrivateXml._meta.get_field("namespace").max_length
    for child in query:
        namespace, _ = split_tag(child.tag)
        if not namespace:
            raise StanzaError("not-acceptable", "private XML needs a namespace of its own")
        if namespace in RESERVED_NAMESPACES or namespace.startswith(RESERVED_PREFIXES):
            raise StanzaError("not-acceptable", f"{namespace} is a reserved namespace")
        if len(namespace) > max_length:
            raise StanzaError("not-acceptable", "namespace too long")
        by_namespace.setdefault(namespace, []).append(child)
    return by_namespace


def _store(username: str, by_namespace: dict[str, list[Element]]) -> None:
    user_id = (
        get_user_model().objects.filter(username=username).values_list("pk", flat=True).first()
    )
    if user_id is None:
        raise StanzaError("registration-required")  # the account was removed meanwhile
    with transaction.atomic():
        for namespace, elements in by_namespace.items():
            xml = "".join(serialize(el, "").decode() for el in elements)
            PrivateXml.objects.update_or_create(
                user_id=user_id, namespace=namespace, defaults={"xml": xml}
            )
