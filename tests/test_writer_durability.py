"""What a crash can lose: offline messages are committed by group commit.

The writer (xmpp/writer.py) starts committing offline messages in the loop
turn after they arrive and gathers the next batch while one commits, with no
timer in between, so a crash loses at most the batch in flight and the one
gathering behind it. A burst of 300 messages is read in one go, so that
batch is all 300; a ping's result therefore goes out only once the group
commits pending before it are done (xmpp/features.py). A server killed with
SIGKILL the moment it answers that ping has committed every message sent
before it (docs/architecture.md, "The writer").
"""

from __future__ import annotations

import os
import signal

from .clients import raw_login
from .conftest import PASSWORD, start_server, stop_server
from .test_offline import stored_count

MESSAGES = 300
# Everything sent before the ping: its result waits for their commit. (Without
# that wait, all 300 were in the batch still committing when the kill landed,
# and none survived.)
SURVIVORS = MESSAGES


def test_offline_messages_survive_kill_9_right_after_a_ping(tmp_path):
    """300 messages to an offline account, then an IQ ping (XEP-0199); on the
    ping's result the server is killed with SIGKILL, then started again on the
    same data: all 300 are in offline storage."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
        sender = raw_login(server, "alice")
        burst = "".join(
            f"<message to='bob@{server.domain}' type='chat' id='m{i}'><body>message {i}</body>"
            "</message>"
            for i in range(MESSAGES)
        )
        ping = "<iq type='get' id='durability-ping'><ping xmlns='urn:xmpp:ping'/></iq>"
        sender.send(burst + ping)
        sender.read_until(b"durability-ping")  # only the result carries this id
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        sender.close()
    finally:
        stop_server(server, drop_database=False)

    restarted = start_server(data_dir)
    try:
        survivors = stored_count(restarted, "bob")
        print(f"offline messages after kill -9: {survivors} of {MESSAGES}")
        assert survivors >= SURVIVORS, f"only {survivors} of {MESSAGES} survived kill -9"
    finally:
        stop_server(restarted)
