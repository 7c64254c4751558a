"""vcard-temp (XEP-0054) and the avatar hash of vCard-based avatars (XEP-0153).

Owns the `{vcard-temp}vCard` IQs, answered on the account's behalf (scope
"account"; an IQ without 'to' is addressed to the sender's own bare JID):

- get of one's own vCard: the stored vCard, or an empty <vCard/> (§3.1);
- set of one's own vCard: stored whole, replacing the last one (§3.2); a set
  on someone else's is <forbidden/>; one larger than XMPP_VCARD_MAX_SIZE
  bytes is <not-acceptable/>;
- get of another user's vCard (§3.3): the stored vCard; when there is none,
  or no such account, <service-unavailable/>, the same answer in both cases
  so that vCards cannot be used to find out which accounts exist.

vcard-temp is listed on the server's disco#info (§4, where clients look
for it) and on every account's.

XEP-0153: when a vCard is set, the SHA-1 of its PHOTO's decoded BINVAL is
stored beside it and cached in the account's in-memory state (loaded at
bind), so that the user's broadcast presence can carry
<x xmlns='vcard-temp:x:update'><photo>HASH</photo></x> when the client did
not include one (`add_photo_hash`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from defusedxml.ElementTree import fromstring
from django.conf import settings
from django.contrib.auth import get_user_model

from .models import VCard
from .plugins import IqRequest, plugins
from .prepared import PreparedQuery
from .protocol.errors import StanzaError
from .protocol.xml import serialize

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .sessions import AccountState

NS_VCARD = "vcard-temp"
NS_VCARD_UPDATE = "vcard-temp:x:update"
VCARD_TAG = f"{{{NS_VCARD}}}vCard"
UPDATE_TAG = f"{{{NS_VCARD_UPDATE}}}x"
# Key in AccountState.data: the photo hash to advertise. Absent: not loaded;
# None: the account has no vCard (advertise nothing); "": a vCard without a
# photo (advertise an empty <photo/>, XEP-0153 §4.1 rule 3); else the hash.
PHOTO_HASH_KEY = "vcard.photo_hash"


# XEP-0054 §4: support is looked for in the server's disco#info (clients
# offer a profile editor from it); Prosody lists it on accounts too.
@plugins.iq(
    VCARD_TAG,
    types=("get", "set"),
    scopes=("account",),
    feature=NS_VCARD,
    advertised_on=("server",),
)
async def vcard(request: IqRequest) -> Element | None:
    own = request.to == request.sender.bare
    if request.type == "set":
        if not own:
            raise StanzaError("forbidden", "you can only set your own vCard")  # §3.2
        await _publish(request)
        return None
    stored = (
        await VCard.objects.filter(user__username=request.to.local, user__is_active=True)
        .values_list("xml", flat=True)
        .afirst()
    )
    if stored is not None:
        return fromstring(stored)
    if own:
        return Element(VCARD_TAG)  # §3.1: no vCard yet
    raise StanzaError("service-unavailable")  # §3.3: no vCard, or no such account


async def _publish(request: IqRequest) -> None:
    payload = request.payload
    xml = serialize(payload, "").decode()
    limit = settings.XMPP_VCARD_MAX_SIZE
    if len(xml.encode()) > limit:
        raise StanzaError("not-acceptable", f"a vCard may have at most {limit} bytes")
    digest = photo_hash(payload)
    user_id = (
        await get_user_model()
        .objects.filter(username=request.sender.local)
        .values_list("pk", flat=True)
        .afirst()
    )
    if user_id is None:
        raise StanzaError("registration-required")  # the account was removed meanwhile
    await VCard.objects.aupdate_or_create(
        user_id=user_id, defaults={"xml": xml, "photo_hash": digest}
    )
    state = request.router.sessions.account(request.sender.bare)
    if state is not None:
        state.data[PHOTO_HASH_KEY] = digest


def photo_hash(vcard_el: Element) -> str:
    """The hex SHA-1 of the image in the vCard's PHOTO/BINVAL (XEP-0153 §3.1),
    or "" when it has none. Whitespace in the base64 is ignored (§4.6 rule 5);
    data that is not base64 is <bad-request/>."""
    binval = vcard_el.findtext(f"{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")
    if not binval or not binval.strip():
        return ""
    try:
        image = base64.b64decode("".join(binval.split()), validate=True)
    except (binascii.Error, ValueError):
        raise StanzaError("bad-request", "PHOTO/BINVAL is not base64") from None
    return hashlib.sha1(image, usedforsecurity=False).hexdigest() if image else ""


# Read at every login (xmpp/prepared.py); at most one row (the vCard's key is the user).
_PHOTO_HASH = PreparedQuery(
    lambda user_id: VCard.objects.filter(user_id=user_id).values_list("photo_hash")
)


@plugins.account_loader
def load_photo_hash(account: AccountState, user_id: int) -> None:
    """Cache the account's photo hash for its presence, once for all its resources
    (None: the account has no vCard)."""
    rows = _PHOTO_HASH.rows(user_id)
    account.data[PHOTO_HASH_KEY] = rows[0][0] if rows else None


def add_photo_hash(session: BoundSession, presence: Element) -> None:
    """Add the XEP-0153 update element to an available broadcast presence whose
    client did not include one, from the cached hash; leave a client's own alone."""
    if presence.get("type") is not None or session.account is None:
        return
    if presence.find(UPDATE_TAG) is not None:
        return
    digest = session.account.data.get(PHOTO_HASH_KEY)
    if digest is None:
        return
    update = SubElement(presence, UPDATE_TAG)
    SubElement(update, f"{{{NS_VCARD_UPDATE}}}photo").text = digest or None


plugins.presence_transform(add_photo_hash)
