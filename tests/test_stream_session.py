"""The stream apart from the bound session (xmpp/stream.py, xmpp/c2s.py,
xmpp/bound_session.py), in process: a ClientStream on a fake transport, fed
bytes, with a registry of its own, so nonza hooks and teardown can be
watched directly.

The harness is tests/inprocess.py.
"""

from __future__ import annotations

import pytest

from xmpp.protocol.jid import JID

from .inprocess import DOMAIN, bind, open_stream, run

NS_SM = "urn:xmpp:sm:3"


@pytest.mark.parametrize("bound", [False, True], ids=["before-bind", "after-bind"])
def test_a_registered_nonza_reaches_its_handler(bound):
    """plugins.nonza: an element that is not a stanza goes to the handler
    registered for that phase, with the stream; the stream goes on."""
    seen = []

    async def scenario(server, registry):
        registry.nonza(f"{{{NS_SM}}}r", before_bind=not bound, after_bind=bound)(
            lambda stream, el: seen.append((stream, el.tag, stream.session is not None))
        )
        stream, transport = open_stream(server, authenticated=True)
        if bound:
            bind(stream, transport)
        stream.data_received(f"<r xmlns='{NS_SM}'/>".encode())
        assert seen == [(stream, f"{{{NS_SM}}}r", bound)]
        assert not transport.closed
        assert b"stream:error" not in transport.written

    run(scenario)


@pytest.mark.parametrize("bound", [False, True], ids=["before-bind", "after-bind"])
def test_an_unregistered_or_wrong_phase_nonza_is_a_stream_error(bound):
    """A nonza nobody handles in this phase: <unsupported-stanza-type/>
    (RFC 6120 §4.9.3.24), and the stream ends."""

    async def scenario(server, registry):
        # Registered for the other phase only.
        registry.nonza(f"{{{NS_SM}}}r", before_bind=bound, after_bind=not bound)(
            lambda stream, el: pytest.fail("called in the wrong phase")
        )
        stream, transport = open_stream(server, authenticated=True)
        if bound:
            bind(stream, transport)
        stream.data_received(f"<r xmlns='{NS_SM}'/>".encode())
        assert b"<unsupported-stanza-type" in transport.written
        assert transport.closed

    run(scenario)


def test_no_nonza_before_authentication():
    """Before SASL, a registered nonza is not reached: not-authorized."""

    async def scenario(server, registry):
        registry.nonza(f"{{{NS_SM}}}resume", before_bind=True, after_bind=False)(
            lambda stream, el: pytest.fail("reached before authentication")
        )
        stream, transport = open_stream(server, authenticated=False)
        stream.data_received(f"<resume xmlns='{NS_SM}' previd='x' h='0'/>".encode())
        assert b"<not-authorized" in transport.written
        assert transport.closed

    run(scenario)


def test_teardown_runs_once_however_the_stream_ends():
    """A stream error and then the connection's loss: the session ends once
    (one session-closed hook call), is unbound, and the server forgets the
    stream once."""
    closed = []

    async def scenario(server, registry):
        registry.on_session_closed(closed.append)
        stream, transport = open_stream(server, authenticated=True)
        session = bind(stream, transport)
        assert server.sessions.get(JID("alice", DOMAIN, "r")) is session
        assert stream in server.all_streams()
        stream.data_received(b"<not-a-stanza/>")  # unsupported-stanza-type
        stream.connection_lost()
        stream.connection_lost()
        assert closed == [session]
        assert server.sessions.get(JID("alice", DOMAIN, "r")) is None
        assert stream not in server.all_streams()
        assert session.stream is None and session.jid is None

    run(scenario)


def test_a_session_attached_to_a_new_stream_survives_the_old_one():
    """The bound session, not the stream, is what the server keeps: once it
    is attached to another stream (what XEP-0198 resumption will do), the
    old stream's end leaves it bound, and its output goes to the new one."""
    closed = []

    async def scenario(server, registry):
        registry.on_session_closed(closed.append)
        old, old_transport = open_stream(server, authenticated=True)
        session = bind(old, old_transport)
        new, new_transport = open_stream(server, authenticated=True)
        session.attach(new)
        old.connection_lost()
        assert closed == []
        assert server.sessions.get(JID("alice", DOMAIN, "r")) is session
        session.send_serialized(b"<message to='alice@stream.test/r'/>")
        assert new_transport.written == b"<message to='alice@stream.test/r'/>"
        assert old_transport.written == b""

    run(scenario)


def test_a_new_bind_of_the_same_resource_replaces_the_old_session():
    """RFC 6120 §7.7.2.2: the old session gets <conflict/> and ends before
    the new one is bound."""
    closed = []

    async def scenario(server, registry):
        registry.on_session_closed(closed.append)
        first, first_transport = open_stream(server, authenticated=True)
        old = bind(first, first_transport)
        second, second_transport = open_stream(server, authenticated=True)
        new = bind(second, second_transport)
        assert b"<conflict" in first_transport.written and first_transport.closed
        assert closed == [old]
        assert server.sessions.get(JID("alice", DOMAIN, "r")) is new

    run(scenario)
