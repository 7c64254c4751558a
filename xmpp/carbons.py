"""Message Carbons (XEP-0280 v1.0.1): copies of a user's conversations on
all of the user's carbons-enabled resources.

Owns:
- the `{urn:xmpp:carbons:2}enable` and `disable` IQ sets (§4, §5), which a
  session sends to its own account (no 'to', or its bare JID); anyone else
  gets <not-allowed/>. Enabling lasts for the session: the enabled sessions
  of an account are a set in its in-memory `AccountState.data`, left when a
  session ends. `urn:xmpp:carbons:2` is on the server's disco#info (§3);
- the copies, made by a message hook (`@plugins.message_routed`) as the
  router routes a message, in memory and through `router.delivery`, so that
  stream management counts them as any other stanza:
  - received (§7): a message for a local account is copied, wrapped in
    <received/> and a XEP-0297 <forwarded/>, to each of its available
    carbons-enabled resources that does not get the original by the rules
    of RFC 6121 §8.5 (the full JID's session, or the bare JID's targets,
    also when a chat to a gone full JID falls back to the bare JID,
    §8.5.3.2.1); none when it goes to offline storage or is bounced;
  - sent (§8): a message a local session sends is copied, wrapped in
    <sent/>, to each available carbons-enabled resource of the sender but
    the sending one (and those it was sent to, which get the original).
    A message to one's own account gets only the sent copies.

Eligible (§6, the rules it suggests): chat, and normal with a <body/>;
never groupchat, headline or error (error copies would need the server to
track which message an error answers, which §6 itself finds unlikely to be
appropriate), nor a message from a MUC room or service (§6: this includes
private messages from occupants, which the room delivers past the router
anyway), except a room's mediated invitation (XEP-0045 §7.8.2), which §6
says to copy as it does a direct one (XEP-0249). A private message
a user sends to an occupant is the user's own and is copied as sent. Never
copied: a message with <private xmlns='urn:xmpp:carbons:2'/> (§9), which is
removed before delivery to a local recipient, or with XEP-0334's <no-copy/>,
or one that already carries a carbons <received/> or <sent/>: only the
server makes carbons, from the user's bare JID, which no client can claim
as its 'from' (the c2s stamps the full JID), so a client checking §11's rule
rejects a forged one, and the server never wraps it as one of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from .plugins import IqRequest, plugins
from .protocol.errors import StanzaError
from .protocol.jid import JID
from .protocol.xml import escape_attr, serialize

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .router import Router
    from .sessions import AccountState

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
ENABLE = f"{{{NS_CARBONS}}}enable"
DISABLE = f"{{{NS_CARBONS}}}disable"
PRIVATE = f"{{{NS_CARBONS}}}private"
RECEIVED = f"{{{NS_CARBONS}}}received"
SENT = f"{{{NS_CARBONS}}}sent"
NO_COPY = "{urn:xmpp:hints}no-copy"
BODY = "{jabber:client}body"
MUC_USER = "{http://jabber.org/protocol/muc#user}x"
MUC_INVITE = "{http://jabber.org/protocol/muc#user}invite"
DIRECT_INVITATION = "{jabber:x:conference}x"  # XEP-0249

# Key of AccountState.data: the account's carbons-enabled sessions.
ENABLED = "carbons.enabled"


# -- enabling and disabling (§4, §5) ------------------------------------------


def _own_session(request: IqRequest) -> BoundSession:
    """The session asking about itself; <not-allowed/> for anyone else (§4.1,
    §5.1: not hosted here, or another user's carbons)."""
    session = request.session
    if (
        session is None
        or getattr(session, "jid", None) != request.sender
        or request.sender.bare != request.to
        or session.account is None
    ):
        raise StanzaError("not-allowed", "carbons are enabled by a session for itself")
    return session


@plugins.iq(
    ENABLE, types=("set",), scopes=("account",), feature=NS_CARBONS, advertised_on=("server",)
)
def enable(request: IqRequest) -> None:
    """§4: a result, also when already enabled (§10.1)."""
    session = _own_session(request)
    session.account.data.setdefault(ENABLED, set()).add(session)


@plugins.iq(
    DISABLE, types=("set",), scopes=("account",), feature=NS_CARBONS, advertised_on=("server",)
)
def disable(request: IqRequest) -> None:
    """§5: a result, also when not enabled (§10.1)."""
    session = _own_session(request)
    session.account.data.get(ENABLED, set()).discard(session)


@plugins.on_session_closed
def forget_session(session: BoundSession) -> None:
    """Enabling lasts for the session (§4)."""
    account = session.account
    enabled = account.data.get(ENABLED) if account is not None else None
    if enabled:
        enabled.discard(session)


# -- the copies (§6-§9) --------------------------------------------------------


@plugins.message_routed
def copy_to_other_resources(
    stanza: Element, sender: JID, to: JID, origin: BoundSession | None, router: Router
) -> None:
    """Send the sent (§8) and received (§7) carbons of a routed message."""
    local_recipient = bool(to.local) and to.domain == router.domain
    private = stanza.find(PRIVATE)
    if private is not None:
        if local_recipient:
            stanza.remove(private)  # §9: the receiving server SHOULD remove it
        return  # §9: MUST NOT be copied, by the sending or the receiving server
    sender_enabled = _enabled(origin.account) if origin is not None else None
    recipient_enabled = _enabled(router.sessions.account(to.bare)) if local_recipient else None
    if (not sender_enabled and not recipient_enabled) or not _eligible(stanza):
        return
    to_self = origin is not None and to.bare == sender.bare
    if sender_enabled:
        got_original = _recipients(stanza, to, router) if to_self else ()
        _send_copies(router, SENT, stanza, origin.bare_str, sender_enabled, origin, got_original)
    from_room = stanza.find(MUC_USER) is not None and not _invitation(stanza)
    if recipient_enabled and not to_self and sender.local and not from_room:
        got_original = _recipients(stanza, to, router)
        if got_original:  # else stored offline or bounced: nobody to copy beside
            bare_str = str(to.bare)
            _send_copies(
                router, RECEIVED, stanza, bare_str, recipient_enabled, origin, got_original
            )


def _invitation(stanza: Element) -> bool:
    """§6: a direct (XEP-0249) or mediated (XEP-0045 §7.8.2) invitation,
    which SHOULD be carbon-copied, body or not."""
    if stanza.find(DIRECT_INVITATION) is not None:
        return True
    x = stanza.find(MUC_USER)
    return x is not None and x.find(MUC_INVITE) is not None


def _eligible(stanza: Element) -> bool:
    """§6: chat, or normal with a body or an invitation; not a carbon itself;
    not no-copy (XEP-0334)."""
    message_type = stanza.get("type", "normal")
    if message_type == "normal":
        if stanza.find(BODY) is None and not _invitation(stanza):
            return False
    elif message_type != "chat":
        return False
    return all(stanza.find(tag) is None for tag in (NO_COPY, RECEIVED, SENT))


def _enabled(account: AccountState | None) -> set[BoundSession] | None:
    return account.data.get(ENABLED) if account is not None else None


def _recipients(stanza: Element, to: JID, router: Router) -> list[BoundSession]:
    """The sessions that get the original by RFC 6121: the full JID's session
    (§8.5.3.1); for a chat to a gone full JID, or a message to the bare JID,
    the resources §8.5.2.1.1 chooses (Delivery.message_targets)."""
    if to.resource:
        session = router.sessions.get(to)
        if session is not None:
            return [session]
        if stanza.get("type") != "chat":
            return []  # §8.5.3.2.1: bounced or dropped
    return router.delivery.message_targets(to.bare, stanza.get("type"))


def _send_copies(
    router: Router,
    wrapper: str,
    stanza: Element,
    bare_str: str,
    enabled: Iterable[BoundSession],
    origin: BoundSession | None,
    got_original: Collection[BoundSession],
) -> None:
    """The carbon (§7, §8) to each available enabled session that is neither
    the sender nor a recipient of the original: from the bare JID, to the
    session's full JID, of the original's type, the original forwarded
    (XEP-0297) inside <received/> or <sent/>. The original is serialised once."""
    targets = [s for s in enabled if s.available and s is not origin and s not in got_original]
    if not targets:
        return
    message_type = stanza.get("type")
    type_attr = f' type="{escape_attr(message_type)}"' if message_type else ""
    name = wrapper.rpartition("}")[2]
    prefix = f'<message from="{escape_attr(bare_str)}"{type_attr} to="'.encode()
    suffix = (
        f'"><{name} xmlns="{NS_CARBONS}"><forwarded xmlns="{NS_FORWARD}">'.encode()
        + serialize(stanza, NS_FORWARD)
        + f"</forwarded></{name}></message>".encode()
    )
    delivery = router.delivery
    for target in targets:
        delivery.to_session(target, prefix + escape_attr(target.jid_str).encode() + suffix)
