"""The server's event loop: uvloop's, unless XMPP_EVENT_LOOP=asyncio.

uvloop is asyncio's loop rewritten on libuv; the server uses it through
asyncio's documented interfaces only, so nothing else changes. On this
2-core machine it cuts what the loop itself costs a login (select, socket
reads and writes, callbacks) by about a tenth of the whole (issue 13).

The whole server runs on the loop of Twisted's asyncio reactor (runxmpp),
and the daphne app installs that reactor, on a loop of asyncio's own, when
Django loads its apps. So manage.py calls `choose()` before that: it
installs the reactor first, on a uvloop loop (Twisted's documented
`asyncioreactor.install(eventloop)`), and Daphne keeps a reactor it finds
installed.
"""

from __future__ import annotations

import os
import sys


def choose() -> str:
    """Install Twisted's asyncio reactor on uvloop where wanted and built; the loop's name."""
    if os.environ.get("XMPP_EVENT_LOOP", "uvloop").strip().lower() == "asyncio":
        return "asyncio"
    if "twisted.internet.reactor" in sys.modules:
        return "as installed"  # by a caller that imported Twisted first
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows): asyncio's own
        return "asyncio"
    from twisted.internet import asyncioreactor

    asyncioreactor.install(uvloop.new_event_loop())
    return "uvloop"


def loop_name(loop) -> str:
    """'uvloop' or 'asyncio', for the start-up log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
