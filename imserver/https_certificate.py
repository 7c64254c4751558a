"""The certificate of the HTTPS and wss:// listener, replaceable while it runs.

Daphne's `ssl:` endpoint string fixes the certificate when the port opens.
runxmpp instead opens that port itself with Twisted's SSL4ServerEndpoint
and this connection creator (twisted.internet.interfaces.
IOpenSSLServerConnectionCreator, the documented way to give a TLS listener
its connections): each new connection gets an OpenSSL Connection from the
CertificateOptions in force, which `reload()` (SIGHUP) replaces. Open
connections keep the context they were made with.
"""

from __future__ import annotations

import re
from pathlib import Path

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from zope.interface import implementer

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def load_certificate_options(cert_path: Path, key_path: Path) -> CertificateOptions:
    """CertificateOptions for the first certificate of `cert_path` (the rest is
    its chain, as Twisted's ssl: endpoint takes from extraCertChain) and its key;
    raises if the files are unreadable, do not parse, or do not match."""
    pems = _PEM_CERTIFICATE.findall(cert_path.read_bytes())
    if not pems:
        raise ValueError(f"no PEM certificate in {cert_path}")
    leaf = PrivateCertificate.loadPEM(pems[0] + b"\n" + key_path.read_bytes())
    options = CertificateOptions(
        privateKey=leaf.privateKey.original,
        certificate=leaf.original,
        extraCertChain=[Certificate.loadPEM(pem).original for pem in pems[1:]],
    )
    options.getContext()  # builds (and caches) the context: a key mismatch fails here
    return options


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableCertificate:
    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.options = load_certificate_options(cert_path, key_path)

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:  # noqa: N802 - Twisted's name
        return SSL.Connection(self.options.getContext(), None)

    def reload(self) -> None:
        """Read the files again for new connections; on error the old certificate stays."""
        self.options = load_certificate_options(self.cert_path, self.key_path)
