"""TCP transport for client-to-server streams: plain with STARTTLS (port 5222,
RFC 6120 §5) and direct TLS (port 5223, XEP-0368).

Bytes in, bytes out; the stream it is attached to (xmpp/c2s.py) does the XMPP. TLS runs over
ssl.MemoryBIO rather than asyncio's SSL transport, whose per-connection
buffers (256 KiB in Python 3.11) would dwarf an idle session; reads go
into one buffer shared by every connection of the process, which is safe
because each read is fully handled before the next one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..protocol.framing import StreamFraming
from ..tls import channel_bindings as tls_channel_bindings

if TYPE_CHECKING:
    from ..c2s import ClientStream
    from ..server import XmppServer
    from ..tls import TlsConfig

log = logging.getLogger(__name__)

READ_SIZE = 65536
_shared_buffer = bytearray(READ_SIZE)
_shared_view = memoryview(_shared_buffer)


class TcpTransport(asyncio.BufferedProtocol):
    framing = StreamFraming()
    # XEP-0198 stream management on this transport (xmpp/stream_management.py).
    offers_stream_management = True

    __slots__ = (
        "server",
        "stream",
        "transport",
        "peer",
        "secure",
        "_tls",
        "_tls_config",
        "_incoming",
        "_outgoing",
        "_handshaking",
        "_tls_1_3",
        "_direct_tls",
        "_closed",
        "_out",
    )

    def __init__(self, server: XmppServer, direct_tls: bool) -> None:
        self.server = server
        self.stream: ClientStream | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.secure = False
        self._tls: ssl.SSLObject | None = None
        # The TLS configuration this connection was made with: a reload
        # (SIGHUP) changes server.tls for new connections only.
        self._tls_config: TlsConfig | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self._handshaking = False
        # Once the handshake is done over TLS 1.3, what TLS itself has to send
        # (our session ticket, RFC 8446 §4.6.1; a KeyUpdate, §4.6.3) is waited
        # for by no one: it goes out with our next data, in the same send. The
        # client speaks first after the handshake (RFC 6120 §4.2, §5.4.3.3),
        # so the ticket goes with our stream header: one send a login less.
        self._tls_1_3 = False
        self._direct_tls = direct_tls
        self._closed = False
        self._out: list[bytes] | None = None

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else ""
        if not self.server.admit(self.peer):
            # Over the global cap on streams: refuse before spending anything on it.
            transport.abort()
            self._closed = True
            return
        self.stream = self.server.attach(self)
        if self._direct_tls:
            self.start_tls()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _shared_view

    def buffer_updated(self, nbytes: int) -> None:
        if self._tls is None:
            self.stream.data_received(bytes(_shared_view[:nbytes]))
        else:
            # The BIO copies what it is given: no bytes object in between.
            self._tls_data_received(_shared_view[:nbytes])

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.connection_lost()

    # -- what the stream calls -----------------------------------------------

    @property
    def channel_bindings(self) -> dict[str, bytes]:
        """The connection's channel bindings for SCRAM-*-PLUS (xmpp/tls.py)."""
        if not self.secure:
            return {}
        # RFC 5929 §4.1: tls-server-end-point is the hash of the certificate
        # this connection used, which a SIGHUP reload does not change.
        return tls_channel_bindings(self._tls, self._tls_config.server_end_point)

    @property
    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport else 0

    def write(self, data: bytes) -> None:
        """Queue `data`; it is sent at the end of this loop turn (transport/batching.py)."""
        if self._closed:
            return
        if self._out is None:
            self._out = [data]
            self.server.write_batcher.mark(self)
        else:
            self._out.append(data)

    def flush(self) -> None:
        out, self._out = self._out, None
        if not out or self._closed:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if self._tls is None:
            self.transport.write(data)
            return
        try:
            self._tls.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self._flush_tls()

    def start_tls(self) -> None:
        """Begin the server side of a TLS handshake (after <proceed/>, or at once
        for direct TLS); decrypted bytes reach the stream once it completes."""
        self.flush()  # <proceed/> goes out in the clear, before the handshake
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls_config = self.server.tls
        self._tls = self._tls_config.context.wrap_bio(
            self._incoming, self._outgoing, server_side=True
        )
        self._handshaking = True

    def close(self) -> None:
        """Close after what is written has been sent (TLS close_notify included)."""
        if self._closed:
            return
        if self._tls is None or self._handshaking:
            self.flush()
        else:
            # What is queued and the close_notify in one send.
            out, self._out = self._out, None
            try:
                if out:
                    self._tls.write(b"".join(out))
                self._tls.unwrap()
            except ssl.SSLError:
                pass
            if self._outgoing.pending:
                self.transport.write(self._outgoing.read())
        self._closed = True
        self.transport.close()

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resume_reading()

    # -- TLS over memory BIOs -----------------------------------------------

    def _tls_data_received(self, data: bytes | memoryview) -> None:
        tls, incoming = self._tls, self._incoming
        incoming.write(data)
        if self._handshaking:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", self.peer, exc)
                self._flush_tls()
                self.abort()
                return
            self._handshaking = False
            self.secure = True
            self._tls_1_3 = tls.version() == "TLSv1.3"
            if not self._tls_1_3:
                self._flush_tls()  # TLS 1.2: our Finished, which the client waits for
            if not incoming.pending:
                return
        chunks = []
        try:
            # Until the records received are used up, rather than until
            # read() raises SSLWantReadError: an exception costs more than
            # decrypting the record.
            while True:
                chunk = tls.read(READ_SIZE)
                if not chunk:
                    break  # close_notify from the peer
                chunks.append(chunk)
                if not incoming.pending and not tls.pending():
                    break
        except ssl.SSLWantReadError:
            pass  # the rest of a record is on its way
        except ssl.SSLError as exc:
            log.debug("TLS error from %s: %s", self.peer, exc)
            self.abort()
            return
        if not self._tls_1_3:
            self._flush_tls()
        if chunks and self.stream is not None:
            self.stream.data_received(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    def _flush_tls(self) -> None:
        if self._outgoing.pending and not self._closed:
            self.transport.write(self._outgoing.read())
