"""What a crash can lose: offline messages are committed by group commit.

The writer (xmpp/writer.py) starts committing offline messages in the loop
turn after they arrive and gathers the next batch while one commits, with no
timer in between, so a crash (kill -9) loses at most the batch being
committed and the one gathering behind it (docs/architecture.md, "The
writer"). This test measures that: a first burst of messages to an offline
account, a moment for its commit, then a second burst; the server is killed
the moment it answers the ping that follows the second burst. The first
burst must all be there after a restart; of the second, what survived is
printed (it may be none: a burst read in one go is one batch).
"""

from __future__ import annotations

import os
import signal
import time

from .clients import raw_login
from .conftest import PASSWORD, start_server, stop_server
from .test_offline import stored_count

MESSAGES = 300
# Longer than a group commit of 300 rows takes on a loaded machine, far
# shorter than any flush interval a writer could wait on.
COMMIT_TIME = 1.0


def burst(domain: str, first: int) -> str:
    return "".join(
        f"<message to='bob@{domain}' type='chat' id='m{i}'><body>message {i}</body></message>"
        for i in range(first, first + MESSAGES)
    )


def ping(iq_id: str) -> str:
    return f"<iq type='get' id='{iq_id}'><ping xmlns='urn:xmpp:ping'/></iq>"


def test_kill_9_loses_at_most_the_offline_batch_being_committed(tmp_path):
    """300 messages to an offline account, a ping, then a second 300 and a
    ping; on the second ping's result the server is killed with SIGKILL and
    started again on the same data: all of the first 300 are in offline
    storage (nothing waited on a timer), and no more than 600."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    try:
        server.manage("register", "--from-file", "-", input=f"alice {PASSWORD}\nbob {PASSWORD}\n")
        sender = raw_login(server, "alice")
        sender.send(burst(server.domain, 0) + ping("first"))
        sender.read_until("id=.first.")
        time.sleep(COMMIT_TIME)
        sender.send(burst(server.domain, MESSAGES) + ping("second"))
        sender.read_until("id=.second.")
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        sender.close()
    finally:
        stop_server(server, drop_database=False)

    restarted = start_server(data_dir)
    try:
        survivors = stored_count(restarted, "bob")
        print(f"offline messages after kill -9: {survivors} of {2 * MESSAGES}")
        assert MESSAGES <= survivors <= 2 * MESSAGES, f"{survivors} of {2 * MESSAGES} survived"
    finally:
        stop_server(restarted)
