"""TLS for the XMPP listeners: the server certificate, the SSL context, and
the channel bindings (RFC 5056) a TLS connection gives SCRAM-*-PLUS.

If XMPP_TLS_CERT/XMPP_TLS_KEY are not set, a self-signed ECDSA P-256
certificate (cheaper handshakes than RSA) for the domain is generated in
XMPP_DATA_DIR on first start and reused afterwards.

Channel bindings, by TLS version:

| type | TLS 1.2 | TLS 1.3 |
| --- | --- | --- |
| tls-server-end-point (RFC 5929 §4) | yes | yes |
| tls-unique (RFC 5929 §3) | yes | no: not defined there (RFC 9266 §1) |
| tls-exporter (RFC 9266 §2) | no | no |

tls-exporter needs the keying-material exporter of RFC 5705 / RFC 8446 §7.5
on the connection, and Python's ssl module has none (CPython issue 82133).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsConfig:
    context: ssl.SSLContext
    # RFC 5929 §4: tls-server-end-point is the hash of our certificate, the
    # same for every connection, so it is computed once.
    server_end_point: bytes


def generate_self_signed(domain: str, cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names = [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_end_point_hash(cert_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    algorithm = cert.signature_hash_algorithm
    # RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256.
    name = "sha256" if algorithm is None or algorithm.name in ("md5", "sha1") else algorithm.name
    return hashlib.new(name, cert.public_bytes(serialization.Encoding.DER)).digest()


def channel_bindings(connection: ssl.SSLObject, server_end_point: bytes) -> dict[str, bytes]:
    """Channel-binding type -> data, for a TLS connection whose handshake is done.

    These are what the connection supports: the mechanisms offered, the
    XEP-0440 <sasl-channel-binding/> list and what SCRAM accepts all come
    from this dict.
    """
    bindings = {}
    if connection.version() == "TLSv1.2":
        # RFC 5929 §3.1: the first Finished message of the latest handshake;
        # the ssl module picks the client's or the server's (on resumption).
        unique = connection.get_channel_binding("tls-unique")
        if unique:
            bindings["tls-unique"] = unique
    bindings["tls-server-end-point"] = server_end_point
    return bindings


def certificate_files(
    domain: str, data_dir: Path, cert: str = "", key: str = ""
) -> tuple[Path, Path]:
    """The certificate (with its chain) and key files: XMPP_TLS_CERT/KEY, else the
    self-signed pair in XMPP_DATA_DIR, generated the first time."""
    if cert and key:
        return Path(cert), Path(key)
    cert_path, key_path = data_dir / f"{domain}.crt", data_dir / f"{domain}.key"
    if not (cert_path.exists() and key_path.exists()):
        log.info("generating a self-signed certificate for %s in %s", domain, data_dir)
        generate_self_signed(domain, cert_path, key_path)
    return cert_path, key_path


def load_tls_config(domain: str, data_dir: Path, cert: str = "", key: str = "") -> TlsConfig:
    """A new TlsConfig from the files; raises (ssl.SSLError, OSError, ValueError)
    if they cannot be read, do not parse, or the key does not match."""
    cert_path, key_path = certificate_files(domain, data_dir, cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A TLS 1.2 renegotiation would change tls-unique under a SASL exchange,
    # and is the step the triple handshake attack on it needs (RFC 7627 §1).
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert_path, key_path)
    # TLS 1.3 session tickets (RFC 8446 §4.6.1): OpenSSL sends two by default,
    # for clients that open connections in parallel; an XMPP client holds one
    # stream, so one ticket lets it resume its next connection, and the
    # second cost every handshake a ticket encryption and bytes for nothing.
    context.num_tickets = 1
    # XEP-0368 direct TLS uses the ALPN protocol id "xmpp-client".
    context.set_alpn_protocols(["xmpp-client"])
    return TlsConfig(context, server_end_point_hash(cert_path.read_bytes()))
