"""The plugin registry: what each app owns, registered in its AppConfig.ready().

An app registers, by key, the IQ payloads it answers, the domains it serves,
the disco features it adds and the stream features it offers. The router
looks handlers up by key; it never scans them and never imports an app by
name (ARCHITECTURE.md, "Router and plugins"). A third-party plugin is just
another Django app that does the same in its ready().
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from xml.etree.ElementTree import Element

from .protocol.jid import JID

if TYPE_CHECKING:
    from .bound_session import BoundSession
    from .c2s import ClientStream
    from .router import Router
    from .sessions import AccountState, SessionManager
    from .stream import XmlStream

# Where an IQ is addressed (RFC 6121 §8.5): to the server's own domain, or to
# a user's bare JID, which the server answers on the user's behalf; "stream"
# is an IQ on a stream not yet authenticated (XEP-0077 registration).
Scope = Literal["server", "account", "stream"]
# The scopes that have a disco#info (XEP-0030 §3.1): before authentication
# there is nothing to ask.
DiscoScope = Literal["server", "account"]
DISCO_SCOPES: tuple[DiscoScope, ...] = ("server", "account")


@dataclass(frozen=True, slots=True)
class NotAFeature:
    """What an IQ registration gives instead of a disco#info feature: why its
    namespace is not one (already covered by another feature, only reachable
    before authentication, ...). Read by the tests that hold disco#info to the
    registry, and by the next engineer."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("NotAFeature needs a reason")


@dataclass(frozen=True, slots=True)
class IqRegistration:
    """One @plugins.iq(...) call, as registered."""

    payload_tag: str
    types: tuple[str, ...]
    scopes: tuple[Scope, ...]
    feature: str | NotAFeature
    # Where disco#info lists `feature`: the handler's own disco scopes, and
    # those it was asked to be advertised on besides.
    advertised_on: tuple[DiscoScope, ...]

    @property
    def namespace(self) -> str:
        return self.payload_tag[1:].partition("}")[0]


@dataclass(slots=True)
class IqRequest:
    """An IQ get or set for a registered handler."""

    stanza: Element
    payload: Element
    sender: JID
    to: JID
    router: Router
    # The sender's bound session; before authentication (scope "stream"),
    # the stream the IQ came on.
    session: BoundSession | ClientStream | None = None

    @property
    def type(self) -> str:
        return self.stanza.get("type", "")


# Returned by an IQ handler that has sent its answer itself.
ANSWERED = object()

# A handler returns the result payload (or None for an empty result), or an
# awaitable of it when it needs the database; it raises StanzaError to fail.
IqHandler = Callable[[IqRequest], "Element | None | Awaitable[Element | None]"]
# A service owns a whole domain (conference.<domain>, pubsub.<domain>).
ServiceHandler = Callable[[Element, JID, "Router"], Any]
StreamFeature = Callable[["ClientStream"], "Element | None"]
# Handles a nonza: a top-level element of a stream that is not a stanza
# (XEP-0198's <enable/>, <r/>, <a/>); may return an awaitable, during which
# the stream reads nothing more.
NonzaHandler = Callable[["XmlStream", Element], Any]
# Session hooks may return an awaitable; the session waits for it in order.
SessionHook = Callable[["BoundSession"], Any]
# A filter sees every stanza routed from or to a local account, before
# delivery; it returns True when it has dealt with the stanza (e.g. blocked it).
StanzaFilter = Callable[[Element, JID, JID, "Router"], bool]
# Refuses bytes delivered past the router (xmpp/delivery.py): given the
# sender once per batch, a test of each recipient address and its account's
# state (None if offline) that is True when it must not get them; or None
# when nothing from that sender is ever refused.
RecipientTest = Callable[[JID, "AccountState | None"], bool]
RecipientFilter = Callable[[JID, "SessionManager"], "RecipientTest | None"]
# Sees each message the router routes (stanza, sender, to, the sender's
# session if a local client sent it), once the stanza filters let it
# through and before it is delivered: it may deliver more through
# router.delivery (XEP-0280 carbons) and drop a child meant for the server
# only, but neither reroutes nor refuses the message. Memory only, no I/O.
MessageHook = Callable[[Element, JID, JID, "BoundSession | None", "Router"], None]
# Gets a chat/normal message for an account with no available resource
# (RFC 6121 §8.5.2.2.1); it stores it or bounces it itself.
OfflineHandler = Callable[[Element, JID, "Router"], Any]
# Told of a message committed to offline storage for the bare JID of a
# local account (push notifications, XEP-0357).
OfflineStoredHook = Callable[[Element, JID, "Router"], None]
# Told of a message written to a session that is detached (XEP-0198) or
# inactive (XEP-0352), as the serialised bytes (push notifications).
MessageWaitsHook = Callable[["BoundSession", bytes], None]
# Fills an account's in-memory state from the database, synchronously: all
# loaders run together in one worker thread at the account's first bind.
AccountLoader = Callable[["AccountState", int], None]
# Changes a session's broadcast presence before it goes out (XEP-0153 hash).
PresenceTransform = Callable[["BoundSession", Element], None]
# Answers disco#info or disco#items about one node of an account with the
# whole <query node=''/> (XEP-0030 §3.2, §4.2), or an awaitable of it.
DiscoNodeHandler = Callable[[IqRequest], "Element | Awaitable[Element]"]
# Lists disco#items of an account (XEP-0030 §4.1) that an app owns, e.g. its
# PEP nodes (XEP-0163): the <item/> elements, or an awaitable of them.
AccountItemsProvider = Callable[[IqRequest], "list[Element] | Awaitable[list[Element]]"]
# Starts an app's own listeners on the running loop, given the bind address;
# returns the coroutine function that stops them at shutdown.
ListenerStarter = Callable[[str], Awaitable[Callable[[], Awaitable[None]]]]
# The nick a session has in a room (XEP-0045), for CSI's mention test
# (xmpp/csi.py): given the session's full JID and the room's bare JID; None
# if it is not an occupant or the app does not own the room.
RoomNickLookup = Callable[[JID, JID], "str | None"]
# Reloads something on SIGHUP without dropping sessions (xmpp/reload.py);
# returns what it reloaded, for the log line, or raises to keep the old.
ReloadHook = Callable[[], Awaitable[str]]


class PresenceHandler:
    """What the router and sessions call for presence (RFC 6121 §3, §4).

    The core's default delivers broadcast presence to the user's own
    resources only; the roster module replaces it with one that knows
    subscriptions."""

    def broadcast(self, session: BoundSession, presence: Element) -> Any:
        """Presence without 'to' from a bound session (available or unavailable)."""
        server = session.server
        server.router.delivery.to_sessions(presence, server.sessions.available(session.jid.bare))

    def directed(self, session: BoundSession, presence: Element) -> None:
        """Available or unavailable presence with a 'to' (directed, RFC 6121 §4.6)."""

    def session_ended(self, session: BoundSession, was_available: bool) -> None:
        """A bound session is gone; tell whoever saw it available (RFC 6121 §4.5.2)."""
        if not was_available:
            return
        gone = Element("{jabber:client}presence", {"type": "unavailable", "from": session.jid_str})
        server = session.server
        server.router.delivery.to_sessions(gone, server.sessions.available(session.jid.bare))

    def inbound(self, stanza: Element, sender: JID, to: JID, router: Router) -> bool:
        """Presence of a subscription type or a probe to a local account; True if handled."""
        return False


@dataclass
class PluginRegistry:
    iq_handlers: dict[tuple[str, str, Scope], IqHandler] = field(default_factory=dict)
    iq_registrations: list[IqRegistration] = field(default_factory=list)
    services: dict[str, ServiceHandler] = field(default_factory=dict)
    server_features: set[str] = field(default_factory=set)
    account_features: set[str] = field(default_factory=set)
    stream_features: list[StreamFeature] = field(default_factory=list)
    pre_auth_stream_features: list[StreamFeature] = field(default_factory=list)
    session_bound_hooks: list[SessionHook] = field(default_factory=list)
    # (element tag, whether the stream carries stanzas yet) -> handler
    nonzas: dict[tuple[str, bool], NonzaHandler] = field(default_factory=dict)
    account_loaders: list[AccountLoader] = field(default_factory=list)
    initial_presence_hooks: list[SessionHook] = field(default_factory=list)
    session_closed_hooks: list[SessionHook] = field(default_factory=list)
    session_resumed_hooks: list[SessionHook] = field(default_factory=list)
    stanza_filters: list[StanzaFilter] = field(default_factory=list)
    recipient_filters: list[RecipientFilter] = field(default_factory=list)
    message_hooks: list[MessageHook] = field(default_factory=list)
    offline_handler: OfflineHandler | None = None
    offline_stored_hooks: list[OfflineStoredHook] = field(default_factory=list)
    message_waits_hooks: list[MessageWaitsHook] = field(default_factory=list)
    account_disco_nodes: dict[tuple[str, str], DiscoNodeHandler] = field(default_factory=dict)
    presence: PresenceHandler = field(default_factory=PresenceHandler)
    presence_transforms: list[PresenceTransform] = field(default_factory=list)
    listeners: list[ListenerStarter] = field(default_factory=list)
    account_identities: list[dict[str, str]] = field(default_factory=list)
    account_items_providers: list[AccountItemsProvider] = field(default_factory=list)
    reload_hooks: list[tuple[str, ReloadHook]] = field(default_factory=list)
    room_nick_lookups: list[RoomNickLookup] = field(default_factory=list)

    def iq(
        self,
        payload_tag: str,
        types: tuple[str, ...] = ("get",),
        scopes: tuple[Scope, ...] = ("server",),
        *,
        feature: str | NotAFeature,
        advertised_on: tuple[DiscoScope, ...] = (),
    ) -> Callable[[IqHandler], IqHandler]:
        """Register a handler for IQs whose payload is `{ns}tag`, e.g.

        @plugins.iq("{urn:xmpp:ping}ping", types=("get",), feature="urn:xmpp:ping")

        Every registration says what it adds to disco#info (XEP-0030 §3.1), so
        that nothing is implemented but left unadvertised: `feature` is listed
        on the disco#info of each of `scopes` that has one ("server",
        "account") and of each of `advertised_on` besides (an account service
        whose support clients look for at their server, e.g. XEP-0054 §4), or
        it is NotAFeature("why not"). A feature needs a scope to be listed on.
        """
        disco_scopes = tuple(dict.fromkeys(s for s in (*scopes, *advertised_on) if s != "stream"))
        if isinstance(feature, str) and not disco_scopes:
            raise ValueError(f"{payload_tag}: no disco#info to list {feature!r} on")
        registration = IqRegistration(payload_tag, types, scopes, feature, disco_scopes)

        def register(handler: IqHandler) -> IqHandler:
            for iq_type in types:
                for scope in scopes:
                    self.iq_handlers[(iq_type, payload_tag, scope)] = handler
            self.iq_registrations.append(registration)
            if isinstance(feature, str):
                if "server" in disco_scopes:
                    self.server_features.add(feature)
                if "account" in disco_scopes:
                    self.account_features.add(feature)
            return handler

        return register

    def service(self, subdomain: str, handler: ServiceHandler) -> None:
        """Give every stanza to `<subdomain>.<XMPP_DOMAIN>` to `handler`."""
        self.services[subdomain] = handler

    def account_disco_node(
        self, node: str, info: DiscoNodeHandler, items: DiscoNodeHandler
    ) -> None:
        """Answer disco#info and disco#items about `node` of an account, e.g.
        XEP-0013's http://jabber.org/protocol/offline."""
        self.account_disco_nodes[("info", node)] = info
        self.account_disco_nodes[("items", node)] = items

    def stream_feature(self, feature: StreamFeature) -> StreamFeature:
        """Offer a stream feature after resource binding, e.g. stream management."""
        self.stream_features.append(feature)
        return feature

    def pre_auth_stream_feature(self, feature: StreamFeature) -> StreamFeature:
        """Offer a stream feature before authentication, e.g. XEP-0077 registration."""
        self.pre_auth_stream_features.append(feature)
        return feature

    def nonza(
        self, tag: str, *, before_bind: bool = False, after_bind: bool = True
    ) -> Callable[[NonzaHandler], NonzaHandler]:
        """Handle the top-level element `tag` ("{namespace}name") on a stream:
        before resource binding (after SASL, as XEP-0198's <resume/>), after
        it (<enable/>, <r/>, <a/>), or both. Unregistered nonzas get
        <unsupported-stanza-type/> (RFC 6120 §4.9.3.24)."""

        def register(handler: NonzaHandler) -> NonzaHandler:
            for bound, wanted in ((False, before_bind), (True, after_bind)):
                if wanted:
                    if (tag, bound) in self.nonzas:
                        raise ValueError(f"{tag} already has a nonza handler")
                    self.nonzas[(tag, bound)] = handler
            return handler

        return register

    def on_session_bound(self, hook: SessionHook) -> SessionHook:
        """Run when a resource is bound, before the bind result is sent; may be async
        (load the account's roster, block list...)."""
        self.session_bound_hooks.append(hook)
        return hook

    def account_loader(self, loader: AccountLoader) -> AccountLoader:
        """Load per-account state (roster, block list...) with the sync ORM when an
        account's first resource binds: one thread hand-off for all of them."""
        self.account_loaders.append(loader)
        return loader

    def on_initial_presence(self, hook: SessionHook) -> SessionHook:
        """Run after a session's first available presence (offline messages...)."""
        self.initial_presence_hooks.append(hook)
        return hook

    def on_session_resumed(self, hook: SessionHook) -> SessionHook:
        """Run when a detached session is resumed on a new stream (XEP-0198
        §5), after what it had not acknowledged was sent again; synchronous."""
        self.session_resumed_hooks.append(hook)
        return hook

    def on_session_closed(self, hook: SessionHook) -> SessionHook:
        self.session_closed_hooks.append(hook)
        return hook

    def on_offline_stored(self, hook: OfflineStoredHook) -> OfflineStoredHook:
        """Run on the loop for each message the offline handler has committed
        to storage (not for one it dropped or refused), e.g. to push it."""
        self.offline_stored_hooks.append(hook)
        return hook

    def on_message_waits(self, hook: MessageWaitsHook) -> MessageWaitsHook:
        """Run for each message written to a session whose client may not see
        it now: detached (XEP-0198) or inactive (XEP-0352); `hook(session,
        data)` with the serialised message, e.g. to push it (XEP-0357)."""
        self.message_waits_hooks.append(hook)
        return hook

    def presence_transform(self, transform: PresenceTransform) -> PresenceTransform:
        """Amend a session's broadcast presence (available or unavailable) in place."""
        self.presence_transforms.append(transform)
        return transform

    def stanza_filter(self, stanza_filter: StanzaFilter) -> StanzaFilter:
        self.stanza_filters.append(stanza_filter)
        return stanza_filter

    def recipient_filter(self, recipient_filter: RecipientFilter) -> RecipientFilter:
        """The memory-only counterpart of a stanza filter, for the delivery
        service's fan-out of bytes serialised once (MUC, pubsub, presence)."""
        self.recipient_filters.append(recipient_filter)
        return recipient_filter

    def message_routed(self, hook: MessageHook) -> MessageHook:
        """See every message the router routes, after the filters and before
        its delivery (see MessageHook), e.g. to copy it to the sender's and
        the recipient's other resources (XEP-0280)."""
        self.message_hooks.append(hook)
        return hook

    def account_identity(self, category: str, type: str) -> None:
        """Add an identity to every account's disco#info, e.g. pubsub/pep (XEP-0163 §4)."""
        self.account_identities.append({"category": category, "type": type})

    def account_items_provider(self, provider: AccountItemsProvider) -> AccountItemsProvider:
        """Add items to every account's disco#items (no node), e.g. its PEP nodes."""
        self.account_items_providers.append(provider)
        return provider

    def listener(self, starter: ListenerStarter) -> ListenerStarter:
        """Open listeners of an app's own protocol (STUN over UDP...) on runxmpp's loop."""
        self.listeners.append(starter)
        return starter

    def room_nick(self, lookup: RoomNickLookup) -> RoomNickLookup:
        """Tell CSI (xmpp/csi.py) a session's nick in a room the app serves."""
        self.room_nick_lookups.append(lookup)
        return lookup

    def on_reload(self, what: str) -> Callable[[ReloadHook], ReloadHook]:
        """Reload `what` (e.g. "run-time settings") on SIGHUP."""

        def register(hook: ReloadHook) -> ReloadHook:
            self.reload_hooks.append((what, hook))
            return hook

        return register


plugins = PluginRegistry()
