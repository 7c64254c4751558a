"""In-band registration (XEP-0077): creating an account before logging in,
changing one's password and removing one's account.

Account creation is off unless XMPP_REGISTRATION_ENABLED is true. Then the
stream feature <register xmlns='http://jabber.org/features/iq-register'/> is
offered next to the SASL mechanisms (§8), and `{jabber:iq:register}query`
IQs are answered on the unauthenticated stream (scope "stream", §3.1): a get
returns the fields (username, password), a set creates the account.
<conflict/> for a name already taken, <not-acceptable/> for a missing field,
a name that is not a valid localpart or a password the PRECIS OpaqueString
profile refuses; <service-unavailable/> while registration is off.

Once logged in, always (scopes "server" and "account"; XEP-0077's own
examples send these with and without 'to'):
- get: <registered/> and the user's name (§3.1);
- set with username and password: a new password (§3.3); the username must
  be the sender's own (<forbidden/>), an empty password keeps the old one
  (<bad-request/>), and only over TLS (<not-authorized/>);
- set with <remove/>: the account is deleted, the IQ answered, then every
  session of the account is closed with a <not-authorized/> stream error (§3.2).

No error echoes a password back (§3.3): the <password/> is taken out of the
request's payload, which error replies copy, as soon as it has been read.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from asgiref.sync import sync_to_async

from .accounts import (
    AccountExists,
    AccountNotFound,
    InvalidJID,
    InvalidPassword,
    create_account,
    delete_account,
    prepare_username,
    set_account_password,
)
from .plugins import ANSWERED, IqRequest, NotAFeature, plugins
from .protocol.errors import StanzaError, StreamError
from .protocol.jid import JID
from .runtime_settings import runtime_settings

NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
QUERY_TAG = f"{{{NS_REGISTER}}}query"
# What the registrations below give instead of a disco#info feature.
BEFORE_AUTHENTICATION = NotAFeature(
    "no disco#info before authentication: §8 advertises in-band registration "
    "as the <register/> stream feature"
)
OWN_ACCOUNT = NotAFeature(
    "an IQ without 'to' (RFC 6120 §10.3.3) reaches the sender's account; "
    "jabber:iq:register is advertised on the server, where clients look for it"
)
USERNAME_TAG = f"{{{NS_REGISTER}}}username"
PASSWORD_TAG = f"{{{NS_REGISTER}}}password"
REMOVE_TAG = f"{{{NS_REGISTER}}}remove"
REGISTERED_TAG = f"{{{NS_REGISTER}}}registered"
INSTRUCTIONS_TAG = f"{{{NS_REGISTER}}}instructions"


def registration_enabled() -> bool:
    # XMPP_REGISTRATION_ENABLED, or what an administrator set at run time.
    return bool(runtime_settings.get("XMPP_REGISTRATION_ENABLED"))


@plugins.pre_auth_stream_feature
def register_feature(session) -> Element | None:
    """§8: advertise in-band registration, only when it is enabled."""
    if not registration_enabled():
        return None
    return Element(f"{{{NS_REGISTER_FEATURE}}}register")


# -- before authentication: creating an account (§3.1) -------------------------


@plugins.iq(QUERY_TAG, types=("get",), scopes=("stream",), feature=BEFORE_AUTHENTICATION)
def registration_fields(request: IqRequest) -> Element:
    if not registration_enabled():
        raise StanzaError("service-unavailable", "in-band registration is disabled")
    query = Element(QUERY_TAG)
    SubElement(query, INSTRUCTIONS_TAG).text = "Choose a username and password."
    SubElement(query, USERNAME_TAG)
    SubElement(query, PASSWORD_TAG)
    return query


@plugins.iq(QUERY_TAG, types=("set",), scopes=("stream",), feature=BEFORE_AUTHENTICATION)
async def register_account(request: IqRequest) -> None:
    if not registration_enabled():
        raise StanzaError("service-unavailable", "in-band registration is disabled")
    username, password = _take_fields(request.payload)
    if request.payload.find(REMOVE_TAG) is not None:
        # §3.2 table: removal by an entity that has not authenticated.
        raise StanzaError("unexpected-request", "log in to remove an account")
    if not username or not password:
        raise StanzaError("not-acceptable", "both username and password are required")
    try:
        await sync_to_async(create_account)(username, password)
    except AccountExists:
        raise StanzaError("conflict", "that username is taken") from None
    except InvalidJID:
        raise StanzaError("not-acceptable", "that username is not allowed") from None
    except InvalidPassword:
        raise StanzaError("not-acceptable", "that password is not allowed") from None
    return None


# -- logged in: registration state, password change (§3.3), removal (§3.2) ----


@plugins.iq(QUERY_TAG, types=("get", "set"), scopes=("account",), feature=OWN_ACCOUNT)
@plugins.iq(QUERY_TAG, types=("get", "set"), scopes=("server",), feature=NS_REGISTER)
async def manage_account(request: IqRequest) -> Element | object | None:
    if request.to.local and request.to != request.sender.bare:
        raise StanzaError("service-unavailable")  # another user's account
    if request.type == "get":
        query = Element(QUERY_TAG)
        SubElement(query, INSTRUCTIONS_TAG).text = "You are registered."
        SubElement(query, REGISTERED_TAG)
        SubElement(query, USERNAME_TAG).text = request.sender.local
        SubElement(query, PASSWORD_TAG)
        return query
    removing = request.payload.find(REMOVE_TAG) is not None
    only_child = len(request.payload) == 1
    username, password = _take_fields(request.payload)
    if removing:
        if not only_child:
            raise StanzaError("bad-request", "<remove/> must be the only child")
        await _remove_account(request)
        return ANSWERED
    await _change_password(request, username, password)
    return None


async def _change_password(request: IqRequest, username: str | None, password: str | None) -> None:
    if request.session is not None and not request.session.secure:
        raise StanzaError("not-authorized", "change passwords over TLS only")
    if not username:
        raise StanzaError("bad-request", "the username is required")
    if not password:
        raise StanzaError("bad-request", "an empty password would keep the old one")
    if not _names_sender(username, request.sender):
        raise StanzaError("forbidden", "you can only change your own password")
    try:
        await sync_to_async(set_account_password)(request.sender.local, password)
    except InvalidPassword:
        raise StanzaError("not-acceptable", "that password is not allowed") from None
    except AccountNotFound:
        raise StanzaError("registration-required") from None


async def _remove_account(request: IqRequest) -> None:
    """§3.2: delete the account, answer, then end every session of it."""
    bare = request.sender.bare
    # RFC 6121 §2.5.2 for every contact: they stop seeing a gone account's
    # presence and lose their subscription to it before the rows go.
    from .presence import presence_handler
    from .roster import roster_of

    roster = roster_of(request.router, bare)
    if roster is not None:
        for contact in roster.listed():
            if not contact.shared:
                presence_handler.cancel_both_ways(request.router, roster, contact)
    try:
        await sync_to_async(delete_account)(bare.local)
    except AccountNotFound:
        raise StanzaError("registration-required") from None
    request.router.reply(request.stanza, None)  # before the stream errors below
    for session in request.router.sessions.resources(bare):
        session.stream_error(StreamError("not-authorized", "the account was removed"))


def _names_sender(username: str, sender: JID) -> bool:
    """True if `username` (a localpart, or a bare JID as in §3.3's form) is the sender."""
    local, at, domain = username.partition("@")
    if at and domain.lower() != sender.domain:
        return False
    try:
        return prepare_username(local) == sender.local
    except InvalidJID:
        return False


def _take_fields(query: Element) -> tuple[str | None, str | None]:
    """The username and password of a request; the password elements are
    removed from `query` so that no error reply carries them back (§3.3)."""
    username = query.findtext(USERNAME_TAG)
    password = query.findtext(PASSWORD_TAG)
    for element in query.findall(PASSWORD_TAG):
        query.remove(element)
    return username, password
