"""BOSH (XEP-0124) carrying XMPP (XEP-0206), as an async Django view at /http-bind/.

Each HTTP request is one <body/>. Its children are stanzas, handed (through
xmpp.protocol.framing.BoshParser) to the same ClientStream a TCP or
WebSocket client gets. What the session writes is queued and returned in the
response of a held request (long polling, XEP-0124 §11): a request is held
up to `wait` seconds until there is output, at most `hold` of them at once.

A BoshSession is the transport of one ClientStream; the HTTP session lives
in this process's memory (a module-level table keyed by sid). There is no
STARTTLS over BOSH: the stream is secure when the HTTP side is (https), or
when XMPP_WEBSOCKET_CONSIDER_SECURE says so, as for WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..protocol.errors import StreamError
from ..protocol.framing import NS_HTTPBIND, NS_XBOSH, BoshFraming, parse_bosh_body
from ..protocol.xml import NS_STREAMS, escape_attr

if TYPE_CHECKING:
    from ..c2s import ClientStream

log = logging.getLogger(__name__)

MAX_HOLD = 2  # requests held at once, at most (the client may ask for fewer)
MAX_PAUSE = 300  # seconds a client may pause a session (XEP-0124 §12)
POLLING = 2  # the shortest polling interval we advertise (§7); not enforced
CONTENT_TYPE = "text/xml; charset=utf-8"
HELP = (
    "This is the BOSH (XEP-0124, XEP-0206) endpoint of this XMPP server: "
    "POST <body/> elements here with an XMPP client.\n"
)

_sessions: dict[str, BoshSession] = {}


def _body(payload: bytes = b"", attrs: dict[str, str] | None = None) -> bytes:
    extra = "".join(f" {k}='{escape_attr(str(v))}'" for k, v in (attrs or {}).items())
    head = f"<body xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{NS_STREAMS}'"
    if not payload:
        return f"{head}{extra}/>".encode()
    return f"{head}{extra}>".encode() + payload + b"</body>"


def _terminate(condition: str) -> bytes:
    return _body(b"", {"type": "terminate", "condition": condition})


class BoshSession:
    """The transport a ClientStream writes to, over BOSH requests."""

    framing = BoshFraming()
    # XEP-0198 on this transport (xmpp/stream_management.py); BOSH has its
    # own acknowledgements and sessions (XEP-0124 §9, XEP-0206).
    offers_stream_management = False
    channel_bindings: dict[str, bytes] = {}

    def __init__(self, server, peer: str, secure: bool, wait: int, hold: int) -> None:
        self.sid = secrets.token_urlsafe(18)
        self.server = server
        self.peer = peer
        self.secure = secure
        self.wait = wait
        self.hold = hold
        self.stream: ClientStream | None = None
        self.rid = 0  # the last rid processed
        self.closed = False
        self.condition = ""  # of the type='terminate' that ends the session
        self._out: list[bytes] = []
        self._held: deque[tuple[int, asyncio.Future]] = deque()
        self._responses: dict[int, bytes] = {}  # §14.3: resent for a repeated rid
        self._order = asyncio.Condition()
        self._finished = False
        self._flush_soon = False
        self._timer: asyncio.TimerHandle | None = None
        # Cleared while the session has stopped reading (shaping, a SASL
        # look-up): a request's stanzas then wait, and so does its response.
        self._reading = asyncio.Event()
        self._reading.set()

    # -- the transport interface of a stream --------------------------------

    @property
    def buffered(self) -> int:
        return sum(len(data) for data in self._out)

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if data.startswith(b"<stream:error"):
            # XEP-0206 §7: a stream error ends the BOSH session; it goes inside
            # the terminate body, whose condition is remote-stream-error.
            self.condition = "remote-stream-error"
            self._out.append(data)
            self.close()
            return
        self._out.append(data)
        if not self._flush_soon:  # what is written in one go leaves in one response
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def close(self) -> None:
        """The stream has ended: held requests (or the next one) get type='terminate'."""
        if self.closed:
            return
        self.closed = True
        self._reading.set()  # requests waiting to be read find the session closed
        self._finish()
        self._flush()

    def abort(self) -> None:
        self._out.clear()
        self.close()

    def pause_reading(self) -> None:
        """Hold the next requests' payloads, and so their responses: a BOSH
        client has at most `hold` + 1 requests out, so it stops sending."""
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # -- requests ------------------------------------------------------------

    def start(self, body, rid: int, size: int) -> bytes:
        """The session creation request (XEP-0124 §7, XEP-0206 §5), of `size`
        bytes: the answer carries the session's parameters and the stream
        features."""
        self.rid = rid
        self.stream.data_received(body, size)
        attrs = {
            "sid": self.sid,
            "wait": self.wait,
            "hold": self.hold,
            "requests": self.hold + 1,
            "inactivity": settings.XMPP_BOSH_INACTIVITY,
            "polling": POLLING,
            "maxpause": MAX_PAUSE,
            "ver": "1.11",
            "from": self.server.domain,
            "authid": self.stream.stream_id,
            "secure": "true",  # we are the XMPP server: nothing lies behind us
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
        }
        response = self._take(attrs)
        self._responses[rid] = response
        if self.closed:  # the stream was refused (host-unknown, ...)
            self._forget()
        else:
            self._start_timer()
        return response

    async def request(self, body, rid: int, size: int) -> bytes:
        # XEP-0124 §14.3: a rid already answered gets the same answer again;
        # one too far ahead or too old ends the session with item-not-found.
        if rid <= self.rid:
            if rid in self._responses:
                return self._responses[rid]
            if not any(held_rid == rid for held_rid, _ in self._held):
                return self._fail("item-not-found")
            self._answer_held(rid)  # the client gave up on it: hold this one instead
            return await self._hold(rid)
        if rid > self.rid + self.hold + 1:
            return self._fail("item-not-found")
        if rid > self.rid + 1:  # §14.2: requests are processed in rid order
            try:
                async with self._order:
                    await asyncio.wait_for(
                        self._order.wait_for(lambda: self.rid >= rid - 1), self.wait
                    )
            except TimeoutError:
                return self._fail("item-not-found")
        self.rid = rid
        async with self._order:
            self._order.notify_all()
        self._cancel_timer()
        pause = body.get("pause")
        if pause is not None:
            return self._pause(pause)
        if not self.closed and (
            len(body) or body.get("type") == "terminate" or body.get(f"{{{NS_XBOSH}}}restart")
        ):
            # A resume may be followed at once by the next pause (shaping
            # lets a few stanzas through at a time): wait until reading stays on.
            while not self._reading.is_set():
                await self._reading.wait()
            if not self.closed:
                self.stream.data_received(body, size)
        return await self._hold(rid)

    async def _hold(self, rid: int) -> bytes:
        """XEP-0124 §11: answer when there is output, or after `wait` seconds."""
        future = asyncio.get_running_loop().create_future()
        self._held.append((rid, future))
        self._flush()
        try:
            response = await asyncio.wait_for(future, self.wait)
        except TimeoutError:
            self._drop(future)
            response = _body()
        except asyncio.CancelledError:  # the client went away
            self._drop(future)
            raise
        self._responses[rid] = response
        self._responses.pop(rid - self.hold - 2, None)
        return response

    def _pause(self, pause: str) -> bytes:
        """XEP-0124 §12: answer every held request now and allow `pause` seconds
        of silence before the session counts as inactive."""
        try:
            seconds = int(pause)
        except ValueError:
            seconds = -1
        if not 0 < seconds <= MAX_PAUSE:
            return self._fail("policy-violation")
        while self._held:
            self._answer_held(self._held[0][0])
        response = self._take()
        self._start_timer(seconds)
        return response

    # -- output and the end of the session -----------------------------------

    def _flush(self) -> None:
        """Output goes to the oldest held request; beyond `hold` requests, the
        oldest is answered at once (§11); once closed, every one is (§13)."""
        self._flush_soon = False
        while self._held and (self._out or self.closed or len(self._held) > self.hold):
            _rid, future = self._held.popleft()
            if not future.done():
                future.set_result(self._take())
        if self.closed and not self._out:
            self._forget()
        elif not self._held and self._timer is None:
            self._start_timer()  # output alone does not keep a session alive

    def _take(self, attrs: dict | None = None) -> bytes:
        payload, self._out = b"".join(self._out), []
        attrs = dict(attrs or {})
        if self.closed:
            attrs["type"] = "terminate"
            if self.condition:
                attrs["condition"] = self.condition
        return _body(payload, attrs)

    def _answer_held(self, rid: int) -> None:
        for entry in list(self._held):
            if entry[0] == rid:
                self._held.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(_body())

    def _drop(self, future: asyncio.Future) -> None:
        self._held = deque(entry for entry in self._held if entry[1] is not future)
        if not self._held and not self.closed:
            self._start_timer()

    def _fail(self, condition: str) -> bytes:
        """End the session at once with a terminal binding condition (§17)."""
        self._out.clear()
        self.condition = condition
        self.close()
        self._forget()
        return _terminate(condition)

    def _finish(self) -> None:
        """The stream is over for the server: as if a TCP connection had dropped."""
        if self._finished:
            return
        self._finished = True
        self.stream.connection_lost()

    def _forget(self) -> None:
        self._cancel_timer()
        _sessions.pop(self.sid, None)

    def _start_timer(self, seconds: float | None = None) -> None:
        # §7 inactivity: counted while the client holds no request.
        self._cancel_timer()
        delay = settings.XMPP_BOSH_INACTIVITY if seconds is None else seconds
        self._timer = asyncio.get_running_loop().call_later(delay, self._inactive)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _inactive(self) -> None:
        self._timer = None
        if self._held:
            return
        log.debug("BOSH session %s of %s timed out", self.sid, self.peer)
        self.closed = True
        self._finish()
        self._forget()


# -- the view ----------------------------------------------------------------


@csrf_exempt
async def http_bind(request) -> HttpResponse:
    if request.method == "OPTIONS":
        return _cors(request, HttpResponse(status=204))
    if request.method == "GET":
        return _cors(request, HttpResponse(HELP, content_type="text/plain; charset=utf-8"))
    if request.method != "POST":
        return _cors(request, HttpResponse(status=405, headers={"Allow": "GET, POST, OPTIONS"}))
    from ..server import XmppServer

    server = XmppServer.current
    if server is None:
        return _cors(request, HttpResponse(status=503))
    limits = server.limits
    try:
        body = parse_bosh_body(
            request.body, limits.max_stanza_size, limits.max_depth, limits.max_attributes
        )
        rid = int(body.get("rid", ""))
    except (StreamError, ValueError):
        return _reply(request, _terminate("bad-request"), status=400)
    sid = body.get("sid")
    if sid is None:
        return _reply(request, _create(request, server, body, rid))
    bosh = _sessions.get(sid)
    if bosh is None:
        return _reply(request, _terminate("item-not-found"))
    return _reply(request, await bosh.request(body, rid, len(request.body)))


def _create(request, server, body, rid: int) -> bytes:
    try:
        wait = int(body.get("wait", settings.XMPP_BOSH_MAX_WAIT))
        hold = int(body.get("hold", 1))
    except ValueError:
        return _terminate("bad-request")
    peer = request.META.get("REMOTE_ADDR") or ""
    if not server.admit(peer):
        return _terminate("policy-violation")
    secure = request.is_secure() or settings.XMPP_WEBSOCKET_CONSIDER_SECURE
    bosh = BoshSession(
        server,
        peer,
        secure,
        wait=max(1, min(wait, settings.XMPP_BOSH_MAX_WAIT)),
        hold=max(0, min(hold, MAX_HOLD)),  # §7: never more than the client asked for
    )
    bosh.stream = server.attach(bosh)
    _sessions[bosh.sid] = bosh
    return bosh.start(body, rid, len(request.body))


def _reply(request, payload: bytes, status: int = 200) -> HttpResponse:
    return _cors(request, HttpResponse(payload, status=status, content_type=CONTENT_TYPE))


def _cors(request, response: HttpResponse) -> HttpResponse:
    """XMPP_BOSH_CORS_ORIGINS: '*' (the default) or a list of allowed origins."""
    allowed = settings.XMPP_BOSH_CORS_ORIGINS
    origin = request.headers.get("Origin", "")
    if "*" in allowed:
        response["Access-Control-Allow-Origin"] = "*"
    elif origin in allowed:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    response["Access-Control-Max-Age"] = "86400"
    return response
