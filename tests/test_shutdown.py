"""Stopping the server (RFC 6120 §4.4, §4.9.3.20): SIGTERM closes every stream
with <system-shutdown/> and then </stream:stream> (RFC 7395's <close/> over
WebSocket; over BOSH a terminate body, XEP-0206 §7) before the process exits
with status 0."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import xml.etree.ElementTree as ET

from .clients import connect, raw_login
from .conftest import PASSWORD, start_server, stop_server
from .test_bosh import Bosh
from .test_websocket import WsStream

NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
SYSTEM_SHUTDOWN = re.compile(
    rb"<stream:error[^>]*><system-shutdown xmlns=\"" + NS_STREAM_ERRORS.encode() + rb"\"/>"
)


def test_sigterm_sends_system_shutdown_then_closes_every_tcp_stream_and_exits_0(tmp_path):
    """On SIGTERM, a raw TCP stream receives <stream:error><system-shutdown/> and then
    </stream:stream> (and the connection closes once it has answered with its own),
    a slixmpp client sees the stream error system-shutdown and is disconnected, and
    the process exits with status 0 within a few seconds."""
    server = start_server(tmp_path / "server", DATABASE_URL="", REDIS_URL="")
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")

        async def scenario() -> tuple[bytes, list[str], float]:
            client = await connect(server, "alice", "shutdown")
            conditions: list[str] = []
            client.add_event_handler("stream_error", lambda e: conditions.append(e["condition"]))
            raw = raw_login(server, "bob", "shutdown")
            try:
                started = time.monotonic()
                server.process.send_signal(signal.SIGTERM)

                def close_like_a_client() -> bytes:
                    data = raw.read_until(b"</stream:stream>")
                    raw.send("</stream:stream>")
                    return data + raw.read_to_close()

                received = await asyncio.to_thread(close_like_a_client)
                await asyncio.wait_for(client.disconnected_event.wait(), 10)
                returncode = await asyncio.to_thread(server.process.wait, 10)
                assert returncode == 0, server.log()
                return received, conditions, time.monotonic() - started
            finally:
                raw.close()

        received, conditions, elapsed = asyncio.run(scenario())
        error = SYSTEM_SHUTDOWN.search(received)
        assert error, received
        assert received.endswith(b"</stream:stream>")
        assert received.index(b"</stream:stream>") > error.start()  # the error comes first
        assert conditions == ["system-shutdown"]
        assert elapsed < 5
    finally:
        stop_server(server)


def test_sigterm_sends_system_shutdown_over_websocket_and_bosh(tmp_path):
    """On SIGTERM, a WebSocket stream gets <stream:error><system-shutdown/> and then
    <close/> (RFC 7395 §3.6), a BOSH client's held request is answered with a
    terminate body of condition remote-stream-error carrying the stream error
    (XEP-0206 §7), and the process still exits with status 0."""
    server = start_server(tmp_path / "server", DATABASE_URL="", REDIS_URL="")
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
        ws = WsStream(server)
        ws.login("alice", "shutdown-ws")

        async def scenario() -> tuple[str, str, int]:
            bosh = Bosh(server, wait=20, hold=1)
            try:
                await bosh.login("bob", "shutdown-bosh")
                held = asyncio.ensure_future(bosh.send())  # an empty request, held
                await asyncio.sleep(0.5)
                server.process.send_signal(signal.SIGTERM)

                def close_like_a_client() -> str:
                    frames = ws.recv_until("<close ")
                    ws.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
                    return frames

                frames = await asyncio.to_thread(close_like_a_client)
                terminate = await asyncio.wait_for(held, 10)
                returncode = await asyncio.to_thread(server.process.wait, 10)
                return frames, terminate, returncode
            finally:
                await bosh.close()
                ws.close()

        frames, terminate, returncode = asyncio.run(scenario())
        assert returncode == 0, server.log()
        assert SYSTEM_SHUTDOWN.search(frames.encode()), frames
        assert frames.index("<close ") > frames.index("system-shutdown")
        body = ET.fromstring(terminate)
        assert body.get("type") == "terminate"
        assert body.get("condition") == "remote-stream-error"
        error = body.find("{http://etherx.jabber.org/streams}error")
        assert error is not None, terminate
        assert error.find(f"{{{NS_STREAM_ERRORS}}}system-shutdown") is not None
    finally:
        stop_server(server)
