"""Stopping the server (RFC 6120 §4.4): SIGTERM closes every stream with
</stream:stream> before the process exits with status 0."""

from __future__ import annotations

import asyncio
import signal
import time

from .clients import connect, raw_login
from .conftest import PASSWORD, start_server, stop_server


def test_sigterm_closes_every_stream_and_exits_0(tmp_path):
    """On SIGTERM, a raw stream receives </stream:stream> (and the connection then
    closes once it has answered with its own), a slixmpp client is disconnected,
    and the process exits with status 0 within a few seconds."""
    server = start_server(tmp_path / "server", DATABASE_URL="", REDIS_URL="")
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")

        async def scenario() -> tuple[bytes, float]:
            client = await connect(server, "alice", "shutdown")
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
                return received, time.monotonic() - started
            finally:
                raw.close()

        received, elapsed = asyncio.run(scenario())
        assert received.endswith(b"</stream:stream>")
        assert b"<stream:error" not in received
        assert elapsed < 5
    finally:
        stop_server(server)
