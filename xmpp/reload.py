"""What SIGHUP reloads, without dropping a session (runxmpp installs the handler).

- The TLS certificate and key of the XMPP listeners (XMPP_TLS_CERT/KEY, or
  the self-signed pair in XMPP_DATA_DIR): new connections use the new ones;
  an open connection keeps the certificate it was made with, and with it
  its tls-server-end-point channel binding (RFC 5929 §4.1), which TcpTransport
  keeps per connection.
- Whatever apps registered with `plugins.on_reload`: the console's run-time
  settings (admin_ui), the HTTPS listener's certificate (runxmpp).

A step that fails is logged as an error and leaves what it would have
replaced in place (a broken certificate file keeps the old certificate);
the other steps still run. One INFO line then says what was reloaded.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from .tls import load_tls_config

if TYPE_CHECKING:
    from .server import XmppServer

log = logging.getLogger(__name__)

_one_at_a_time = asyncio.Lock()


async def reload_tls(server: XmppServer) -> str:
    """A new TlsConfig from the certificate files, for connections made from now on."""
    tls = await asyncio.to_thread(
        load_tls_config,
        settings.XMPP_DOMAIN,
        Path(settings.XMPP_DATA_DIR),
        settings.XMPP_TLS_CERT,
        settings.XMPP_TLS_KEY,
    )
    server.tls = tls
    return f"XMPP TLS certificate (tls-server-end-point {tls.server_end_point.hex()[:16]}…)"


async def reload(server: XmppServer) -> list[str]:
    """Run every reload step; return what was reloaded."""
    async with _one_at_a_time:
        steps = [("XMPP TLS certificate", lambda: reload_tls(server))]
        steps += server.registry.reload_hooks
        done, kept = [], []
        for what, step in steps:
            try:
                done.append(await step())
            except Exception as exc:
                log.error("SIGHUP: could not reload the %s, keeping the old: %s", what, exc)
                kept.append(what)
        log.info(
            "SIGHUP: reloaded %s%s; open sessions kept",
            ", ".join(done) or "nothing",
            f"; kept the old {', '.join(kept)}" if kept else "",
        )
        return done
