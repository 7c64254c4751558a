"""disco#info lists every feature the server implements (XEP-0030 §3.1).

The expected features are derived from the plugin registry as the server
builds it: the apps are loaded in this process through Django's setup
(pytest-django, DJANGO_SETTINGS_MODULE=imserver.settings), so
xmpp.plugins.plugins holds the same registrations as runxmpp's. Every IQ
handler registration names its feature or says why it has none
(`NotAFeature`), so a handler added later is on disco#info without this file
naming it; a real client then asks the server and an account.
"""

from __future__ import annotations

import asyncio

import pytest

from xmpp.plugins import DISCO_SCOPES, NotAFeature, PluginRegistry, plugins

from .clients import connect, disconnect


def expected_features(scope: str) -> set[str]:
    """What disco#info of the server ("server") or of an account ("account")
    must list: the feature of every IQ handler registered at, or advertised on,
    that scope, and the features plugins declare there directly."""
    from_handlers = {
        registration.feature
        for registration in plugins.iq_registrations
        if isinstance(registration.feature, str) and scope in registration.advertised_on
    }
    declared = plugins.server_features if scope == "server" else plugins.account_features
    return from_handlers | declared


def disco_info_features(xmpp_server, asker: str, jid: str) -> set[str]:
    """The features of `jid`'s disco#info, as slixmpp logged in as `asker` gets them."""

    async def scenario():
        client = await connect(xmpp_server, asker, "disco-features")
        try:
            result = await client.plugin["xep_0030"].get_info(jid=jid, local=False, timeout=10)
        finally:
            await disconnect(client)
        return set(result["disco_info"]["features"])

    return asyncio.run(scenario())


# -- the registry's rule ----------------------------------------------------------


def test_the_apps_registered_their_iq_handlers():
    """Django's setup ran the apps' ready(): the registry is the server's."""
    tags = {registration.payload_tag for registration in plugins.iq_registrations}
    assert "{vcard-temp}vCard" in tags
    assert "{http://jabber.org/protocol/disco#info}query" in tags
    assert "{http://jabber.org/protocol/pubsub}pubsub" in tags  # pubsub's ready()
    assert "{urn:xmpp:extdisco:2}services" in tags  # stun's ready()


@pytest.mark.parametrize("scope", DISCO_SCOPES)
def test_every_handler_namespace_at_a_scope_is_a_feature_there_or_says_why_not(scope):
    """An IQ namespace answered at the server or at accounts is listed on that
    disco#info, unless its registration is NotAFeature with a reason."""
    unadvertised = [
        registration.payload_tag
        for registration in plugins.iq_registrations
        if scope in registration.scopes
        and not isinstance(registration.feature, NotAFeature)
        and registration.namespace not in expected_features(scope)
    ]
    assert unadvertised == []


def test_registering_a_handler_without_saying_its_feature_is_refused():
    """`feature` has no default: a registration must name it or give NotAFeature."""
    with pytest.raises(TypeError):
        PluginRegistry().iq("{urn:example}query")


def test_not_a_feature_needs_a_reason():
    with pytest.raises(ValueError):
        NotAFeature(" ")


def test_a_feature_with_no_disco_info_to_be_listed_on_is_refused():
    """A feature registered only at scope "stream" (before authentication, where
    there is no disco#info) would never be listed: refused at registration."""
    with pytest.raises(ValueError):
        PluginRegistry().iq("{urn:example}query", scopes=("stream",), feature="urn:example")


def test_advertised_on_adds_the_feature_to_another_scope():
    """An account service can be advertised on the server too (XEP-0054 §4)."""
    registry = PluginRegistry()
    registry.iq(
        "{urn:example}query", scopes=("account",), feature="urn:example", advertised_on=("server",)
    )(lambda request: None)
    assert "urn:example" in registry.server_features
    assert "urn:example" in registry.account_features
    assert ("get", "{urn:example}query", "server") not in registry.iq_handlers


# -- what a client sees --------------------------------------------------------------


def test_server_disco_info_lists_every_registered_server_feature(xmpp_server):
    """disco#info of the server lists every feature the registry has for the
    server, vcard-temp among them (XEP-0054 §4)."""
    features = disco_info_features(xmpp_server, "alice", xmpp_server.domain)
    assert "vcard-temp" in features
    assert sorted(expected_features("server") - features) == []


@pytest.mark.parametrize("asker", ["alice", "bob"], ids=["own-account", "another-account"])
def test_account_disco_info_lists_every_registered_account_feature(xmpp_server, asker):
    """disco#info of an account's bare JID, asked by the user or by another,
    lists every feature the registry has for accounts, vcard-temp among them."""
    features = disco_info_features(xmpp_server, asker, xmpp_server.jid("alice"))
    assert "vcard-temp" in features
    assert sorted(expected_features("account") - features) == []
