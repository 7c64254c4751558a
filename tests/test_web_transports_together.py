"""A TCP client, a WebSocket client and a BOSH client on one server chat with
each other: every transport feeds the same sessions and router. And the
WebSocket Origin check of XMPP_WEBSOCKET_ORIGINS."""

from __future__ import annotations

import asyncio
import re

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect as ws_connect

from .clients import connect, disconnect
from .conftest import start_server, stop_server
from .test_bosh import Bosh
from .test_websocket import NS_FRAMING, WsStream


def message(to: str, body: str) -> str:
    return f"<message xmlns='jabber:client' type='chat' to='{to}'><body>{body}</body></message>"


def test_tcp_websocket_and_bosh_clients_chat_with_each_other(xmpp_server):
    """Each of the three sends to the other two and receives from both, with the
    server-stamped full JID of the sender."""
    ws = WsStream(xmpp_server)

    async def scenario():
        bosh = Bosh(xmpp_server, wait=5, hold=1)
        tcp = await connect(xmpp_server, "alice", "three-tcp")
        try:
            ws_jid = await asyncio.to_thread(ws.login, "bob", "three-ws")
            bosh_jid = await bosh.login("carol", "three-bosh")
            tcp_jid = tcp.boundjid.full

            tcp.send_message(mto=ws_jid, mbody="tcp to ws", mtype="chat")
            tcp.send_message(mto=bosh_jid, mbody="tcp to bosh", mtype="chat")
            await asyncio.to_thread(ws.send, message(tcp_jid, "ws to tcp"))
            await asyncio.to_thread(ws.send, message(bosh_jid, "ws to bosh"))
            bosh_text = await bosh.send(
                message(tcp_jid, "bosh to tcp") + message(ws_jid, "bosh to ws")
            )

            received = {(await asyncio.wait_for(tcp.messages.get(), 10))["body"] for _ in "ab"}
            assert received == {"ws to tcp", "bosh to tcp"}
            ws_frames = await asyncio.to_thread(ws.recv_until, "bosh to ws")
            ws_frames += "" if "tcp to ws" in ws_frames else ws.recv_until("tcp to ws")
            assert f'from="{tcp_jid}"' in ws_frames and f'from="{bosh_jid}"' in ws_frames
            for _ in range(10):
                if "tcp to bosh" in bosh_text and "ws to bosh" in bosh_text:
                    break
                bosh_text += await bosh.send()
            assert re.search(rf'from="{re.escape(tcp_jid)}"[^>]*>.*tcp to bosh', bosh_text)
            assert re.search(rf'from="{re.escape(ws_jid)}"[^>]*>.*ws to bosh', bosh_text)
        finally:
            await disconnect(tcp)
            await bosh.close()

    try:
        asyncio.run(scenario())
    finally:
        ws.close()


@pytest.fixture(scope="module")
def origin_checking_server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("origins"), XMPP_WEBSOCKET_ORIGINS="http://allowed.example"
    )
    yield server
    stop_server(server)


def test_websocket_from_a_listed_origin_is_accepted(origin_checking_server):
    url = f"ws://127.0.0.1:{origin_checking_server.http_port}/xmpp-websocket"
    with ws_connect(
        url, subprotocols=["xmpp"], origin="http://allowed.example", open_timeout=10
    ) as ws:
        ws.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
        assert ws.recv(timeout=10).startswith(f"<open xmlns='{NS_FRAMING}'")


def test_websocket_from_another_origin_is_refused(origin_checking_server):
    """XMPP_WEBSOCKET_ORIGINS lists the browser origins allowed; another page's
    WebSocket is refused before any XMPP is spoken."""
    url = f"ws://127.0.0.1:{origin_checking_server.http_port}/xmpp-websocket"
    with pytest.raises((InvalidHandshake, ConnectionClosed)):
        with ws_connect(
            url, subprotocols=["xmpp"], origin="http://evil.example", open_timeout=10
        ) as ws:
            ws.send(f"<open xmlns='{NS_FRAMING}' to='localhost' version='1.0'/>")
            ws.recv(timeout=5)
