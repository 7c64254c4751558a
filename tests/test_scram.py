"""SCRAM and PLAIN, server side (xmpp/protocol/scram.py), without sockets or a database.

The client side is written out here from RFC 5802 §3 so the server is checked
against the RFC's own example exchanges and against an independent client
(slixmpp's), not against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from slixmpp.util.sasl.mechanisms import SCRAM as SlixmppScram

from xmpp.protocol import scram
from xmpp.protocol.scram import (
    SaslFailure,
    ScramCredentials,
    ScramServer,
    derive_keys,
    offered_mechanisms,
    parse_plain,
)

DIGESTS = {"SHA-1": "sha1", "SHA-256": "sha256"}
SALT = b"saltsaltsaltsaltsaltsa"


class ScramClient:
    """A minimal SCRAM client (RFC 5802 §3, §5.1) for driving the server."""

    def __init__(self, hash_name, username, password, nonce="clientnonce", gs2_header="n,,"):
        self.digest = DIGESTS[hash_name]
        self.password = password
        self.gs2_header = gs2_header
        self.nonce = nonce
        self.first_bare = f"n={username},r={nonce}"

    def first(self) -> bytes:
        return (self.gs2_header + self.first_bare).encode()

    def final(self, server_first: bytes, cb_data: bytes = b"", nonce: str | None = None) -> bytes:
        attributes = dict(item.split("=", 1) for item in server_first.decode().split(","))
        salt, iterations = base64.b64decode(attributes["s"]), int(attributes["i"])
        channel = base64.b64encode(self.gs2_header.encode() + cb_data).decode()
        without_proof = f"c={channel},r={nonce or attributes['r']}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac(self.digest, self.password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self.digest)
        stored_key = hashlib.new(self.digest, client_key).digest()
        signature = hmac.digest(stored_key, auth_message, self.digest)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", self.digest)
        self.expected_verifier = b"v=" + base64.b64encode(
            hmac.digest(server_key, auth_message, self.digest)
        )
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def credentials(password="pencil", hash_name="SHA-256", salt=SALT, iterations=4096):
    stored_key, server_key = derive_keys(password, salt, iterations, hash_name)
    return ScramCredentials(salt, iterations, stored_key, server_key)


def run_exchange(server, client, creds, cb_data=b""):
    """Drive one exchange; return the server-final-message or raise SaslFailure."""
    server.client_first(client.first())
    server_first = server.server_first(creds)
    return server.client_final(client.final(server_first, cb_data))


def fix_server_nonce(monkeypatch, nonce: str) -> None:
    monkeypatch.setattr(scram.secrets, "token_urlsafe", lambda nbytes=None: nonce)


# RFC 5802 §5 and RFC 7677 §3: the example exchanges, byte for byte.


def test_rfc5802_example_exchange_for_scram_sha_1(monkeypatch):
    """The SCRAM-SHA-1 exchange of RFC 5802 §5 (user/pencil) is reproduced exactly."""
    fix_server_nonce(monkeypatch, "3rfcNHYJY1ZVvWVs7j")
    server = ScramServer("SHA-1")
    creds = credentials("pencil", "SHA-1", base64.b64decode("QSXCR+Q6sek8bf92"))

    assert server.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == "user"
    assert server.server_first(creds) == (
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    assert server.client_final(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    ) == (b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_rfc7677_example_exchange_for_scram_sha_256(monkeypatch):
    """The SCRAM-SHA-256 exchange of RFC 7677 §3 (user/pencil) is reproduced exactly."""
    fix_server_nonce(monkeypatch, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    server = ScramServer("SHA-256")
    creds = credentials("pencil", "SHA-256", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))

    assert server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == "user"
    assert server.server_first(creds) == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert server.client_final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    ) == (b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


# RFC 5802 §5.1: nonce and proof.


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_correct_password_succeeds_and_server_signature_verifies(hash_name):
    """With the right password the server answers v= with the signature the client expects."""
    client = ScramClient(hash_name, "juliet", "r0m30")
    verifier = run_exchange(ScramServer(hash_name), client, credentials("r0m30", hash_name))
    assert verifier == client.expected_verifier


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_wrong_password_is_not_authorized(hash_name):
    """A proof made from another password fails with <not-authorized/>."""
    client = ScramClient(hash_name, "juliet", "wrong")
    with pytest.raises(SaslFailure) as failure:
        run_exchange(ScramServer(hash_name), client, credentials("r0m30", hash_name))
    assert failure.value.condition == "not-authorized"


def test_server_nonce_starts_with_client_nonce_and_adds_randomness():
    """RFC 5802 §5.1: r= of server-first is the client nonce followed by the server's."""
    first = [ScramServer("SHA-256") for _ in range(2)]
    nonces = []
    for server in first:
        server.client_first(b"n,,n=user,r=abc")
        attrs = dict(
            a.split("=", 1) for a in server.server_first(credentials()).decode().split(",")
        )
        nonces.append(attrs["r"])
    assert all(n.startswith("abc") and len(n) > len("abc") + 16 for n in nonces)
    assert nonces[0] != nonces[1]


def test_client_final_with_another_nonce_is_not_authorized():
    """RFC 5802 §5.1: the nonce in client-final must be the combined nonce."""
    server, client = ScramServer("SHA-256"), ScramClient("SHA-256", "user", "pencil")
    server.client_first(client.first())
    server_first = server.server_first(credentials())
    with pytest.raises(SaslFailure) as failure:
        server.client_final(client.final(server_first, nonce="clientnonceOTHER"))
    assert failure.value.condition == "not-authorized"


def test_proof_of_the_wrong_length_is_not_authorized():
    """A proof that is not one digest long is rejected, not crashed on."""
    server = ScramServer("SHA-256")
    server.client_first(b"n,,n=user,r=abc")
    nonce = server.server_first(credentials()).split(b",")[0][2:]
    with pytest.raises(SaslFailure) as failure:
        server.client_final(b"c=biws,r=" + nonce + b",p=AAAA")
    assert failure.value.condition == "not-authorized"


@pytest.mark.parametrize(
    "message",
    [b"c=biws,r=abc", b"r=abc,c=biws,p=AAAA", b"c=b!ws,r=abc,p=AAAA", b"\xff"],
    ids=["no-proof", "wrong-order", "bad-base64", "not-utf8"],
)
def test_malformed_client_final_is_malformed_request(message):
    """client-final-message must follow the RFC 5802 §7 grammar."""
    server = ScramServer("SHA-256")
    server.client_first(b"n,,n=user,r=abc")
    server.server_first(credentials())
    with pytest.raises(SaslFailure) as failure:
        server.client_final(message)
    assert failure.value.condition == "malformed-request"


def test_steps_out_of_order_fail():
    """client_final before server_first is a protocol error, not a crash."""
    server = ScramServer("SHA-256")
    server.client_first(b"n,,n=user,r=abc")
    with pytest.raises(SaslFailure):
        server.client_final(b"c=biws,r=abc,p=AAAA")


# Unknown accounts look like known ones until the proof.


def test_unknown_user_gets_the_same_salt_every_time_and_fails_at_client_final():
    """With no credentials the server still answers, with a stable salt, and fails at the end."""
    key = b"stable secret"
    server_firsts = []
    for _ in range(2):
        server = ScramServer("SHA-256", unknown_user_key=key, unknown_user_iterations=4096)
        client = ScramClient("SHA-256", "nobody", "pencil")
        server.client_first(client.first())
        server_first = server.server_first(None)
        server_firsts.append(server_first)
        with pytest.raises(SaslFailure) as failure:
            server.client_final(client.final(server_first))
        assert failure.value.condition == "not-authorized"
    salts = [dict(a.split("=", 1) for a in m.decode().split(","))["s"] for m in server_firsts]
    assert salts[0] == salts[1]
    assert b",i=4096" in server_firsts[0]


def test_unknown_user_salt_looks_like_a_password_hasher_salt():
    """The fake salt is 22 alphanumerics, like the salts Django makes for real accounts."""
    server = ScramServer("SHA-1")
    server.client_first(b"n,,n=nobody,r=abc")
    salt_b64 = dict(a.split("=", 1) for a in server.server_first(None).decode().split(","))["s"]
    salt = base64.b64decode(salt_b64)
    assert len(salt) == 22 and salt.decode().isalnum()


# Usernames and the gs2 header (RFC 5802 §5.1, §7).


def test_username_escapes_2c_and_3d_are_decoded():
    """RFC 5802 §5.1: "=2C" and "=3D" in a saslname stand for "," and "="."""
    server = ScramServer("SHA-256")
    server.client_first(b"n,a=a=3Db=2Cc,n=user,r=abc")
    assert server.authzid == "a=b,c"


@pytest.mark.parametrize("username", [b"us=er", b"us=2Der", b"user="])
def test_other_escapes_in_username_are_malformed(username):
    """RFC 5802 §5.1: any "=" not followed by 2C or 3D makes the message invalid."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256").client_first(b"n,,n=" + username + b",r=abc")
    assert failure.value.condition == "malformed-request"


def test_username_is_prepared_with_precis_username_case_mapped():
    """RFC 8265 §3.3: usernames are case-mapped and width-mapped before lookup."""
    server = ScramServer("SHA-256")
    assert server.client_first("n,,n=Jülïet,r=abc".encode()) == "jülïet"
    assert ScramServer("SHA-1").client_first("n,,n=ＵＳＥＲ,r=abc".encode()) == "user"


@pytest.mark.parametrize("username", [b"", b"a b", b"a\x07b"])
def test_username_the_profile_rejects_is_malformed(username):
    """Empty names, spaces and controls are not usernames (RFC 8265 §3.3)."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256").client_first(b"n,,n=" + username + b",r=abc")
    assert failure.value.condition == "malformed-request"


def test_authzid_is_taken_from_the_gs2_header():
    """The a= of the gs2 header becomes authzid; without it authzid is None."""
    server = ScramServer("SHA-256")
    server.client_first(b"n,a=juliet@example.com,n=juliet,r=abc")
    assert server.authzid == "juliet@example.com"
    server = ScramServer("SHA-256")
    server.client_first(b"n,,n=juliet,r=abc")
    assert server.authzid is None


def test_authzid_is_bound_into_the_proof():
    """The whole gs2 header, a= included, is checked through c= (RFC 5802 §7)."""
    client = ScramClient("SHA-256", "juliet", "pencil", gs2_header="n,a=juliet@example.com,")
    verifier = run_exchange(ScramServer("SHA-256"), client, credentials())
    assert verifier == client.expected_verifier


@pytest.mark.parametrize(
    "message",
    [
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"n,,n=user,r=",
        b"x,,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n=user,r=abc",
        b"n,,n=\xff,r=abc",
    ],
    ids=[
        "reserved-m",
        "no-nonce",
        "wrong-order",
        "empty-nonce",
        "bad-flag",
        "bad-authzid",
        "empty-authzid",
        "no-gs2-header",
        "not-utf8",
    ],
)
def test_malformed_client_first_is_malformed_request(message):
    """client-first-message must follow RFC 5802 §7; m= is reserved and fails (§5.1)."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256").client_first(message)
    assert failure.value.condition == "malformed-request"


def test_extensions_after_the_nonce_are_ignored():
    """RFC 5802 §5.1: unknown optional attributes are ignored."""
    assert ScramServer("SHA-256").client_first(b"n,,n=user,r=abc,x=ext") == "user"


# Channel binding (RFC 5802 §6, RFC 9266, RFC 5929).

CHANNEL_BINDING = {"tls-exporter": b"exporter-bytes", "tls-server-end-point": b"cert-hash"}
# What a TLS 1.2 connection gives (xmpp/tls.py): tls-unique and tls-server-end-point.
TLS_1_2_BINDING = {"tls-unique": b"finished-message", "tls-server-end-point": b"cert-hash"}
# What a TLS 1.3 connection gives: no tls-unique (RFC 9266 §1).
TLS_1_3_BINDING = {"tls-server-end-point": b"cert-hash"}


@pytest.mark.parametrize("cb_type", ["tls-exporter", "tls-server-end-point"])
@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_plus_with_the_connections_binding_succeeds(hash_name, cb_type):
    """-PLUS with p=<type> succeeds when c= carries this connection's binding data."""
    server = ScramServer(hash_name, CHANNEL_BINDING, plus=True)
    client = ScramClient(hash_name, "user", "pencil", gs2_header=f"p={cb_type},,")
    verifier = run_exchange(
        server, client, credentials("pencil", hash_name), CHANNEL_BINDING[cb_type]
    )
    assert verifier == client.expected_verifier


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_plus_with_tls_unique_succeeds(hash_name):
    """RFC 5802 §6: tls-unique, the binding every -PLUS server MUST implement."""
    server = ScramServer.for_mechanism(f"SCRAM-{hash_name}-PLUS", TLS_1_2_BINDING)
    client = ScramClient(hash_name, "user", "pencil", gs2_header="p=tls-unique,,")
    verifier = run_exchange(
        server, client, credentials("pencil", hash_name), TLS_1_2_BINDING["tls-unique"]
    )
    assert verifier == client.expected_verifier


def test_tls_unique_with_another_types_data_is_not_authorized():
    """c= must carry the data of the type the gs2 header names."""
    server = ScramServer("SHA-256", TLS_1_2_BINDING, plus=True)
    client = ScramClient("SHA-256", "user", "pencil", gs2_header="p=tls-unique,,")
    with pytest.raises(SaslFailure) as failure:
        run_exchange(server, client, credentials(), TLS_1_2_BINDING["tls-server-end-point"])
    assert failure.value.condition == "not-authorized"


def test_tls_unique_on_a_connection_without_it_is_not_authorized():
    """On TLS 1.3 the transport gives no tls-unique; p=tls-unique fails at once."""
    server = ScramServer.for_mechanism("SCRAM-SHA-256-PLUS", TLS_1_3_BINDING)
    with pytest.raises(SaslFailure) as failure:
        server.client_first(b"p=tls-unique,,n=user,r=abc")
    assert failure.value.condition == "not-authorized"


@pytest.mark.parametrize("binding", [TLS_1_2_BINDING, TLS_1_3_BINDING], ids=["tls1.2", "tls1.3"])
def test_y_flag_fails_on_either_tls_version(binding):
    """RFC 5802 §6: we offer -PLUS on both versions, so "y" is a downgrade on both."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer.for_mechanism("SCRAM-SHA-256", binding).client_first(b"y,,n=user,r=abc")
    assert failure.value.condition == "not-authorized"


def test_plus_with_other_binding_data_is_not_authorized():
    """A binding from another TLS connection (a man in the middle) fails."""
    server = ScramServer("SHA-256", CHANNEL_BINDING, plus=True)
    client = ScramClient("SHA-256", "user", "pencil", gs2_header="p=tls-exporter,,")
    with pytest.raises(SaslFailure) as failure:
        run_exchange(server, client, credentials(), b"attacker-exporter")
    assert failure.value.condition == "not-authorized"


def test_c_attribute_must_repeat_the_gs2_header():
    """Without channel binding, c= is still the base64 of the gs2 header ("biws" for "n,,")."""
    server = ScramServer("SHA-256")
    client = ScramClient("SHA-256", "user", "pencil", gs2_header="n,,")
    server.client_first(client.first())
    server_first = server.server_first(credentials())
    client.gs2_header = "y,,"
    with pytest.raises(SaslFailure) as failure:
        server.client_final(client.final(server_first))
    assert failure.value.condition == "not-authorized"


def test_y_flag_fails_when_the_server_supports_channel_binding():
    """RFC 5802 §6: "y" while we offered -PLUS means -PLUS was stripped: a downgrade."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256", CHANNEL_BINDING).client_first(b"y,,n=user,r=abc")
    assert failure.value.condition == "not-authorized"


def test_y_flag_is_accepted_when_the_server_has_no_channel_binding():
    """RFC 5802 §6: "y" is fine when the server really cannot bind."""
    client = ScramClient("SHA-256", "user", "pencil", gs2_header="y,,")
    assert run_exchange(ScramServer("SHA-256"), client, credentials()) == client.expected_verifier


def test_p_flag_with_a_mechanism_without_plus_is_malformed():
    """Channel binding is only negotiated through a -PLUS mechanism name."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256", CHANNEL_BINDING).client_first(b"p=tls-exporter,,n=user,r=abc")
    assert failure.value.condition == "malformed-request"


@pytest.mark.parametrize("flag", [b"n", b"y"])
def test_plus_mechanism_requires_the_p_flag(flag):
    """Choosing -PLUS and then not binding is a protocol error."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer("SHA-256", CHANNEL_BINDING, plus=True).client_first(flag + b",,n=user,r=abc")
    assert failure.value.condition == "malformed-request"


@pytest.mark.parametrize("cb_type", [b"tls-unique", b"tls-exporter"])
def test_p_flag_with_a_type_the_connection_lacks_fails(cb_type):
    """RFC 5802 §6: an unsupported channel binding type fails authentication."""
    server = ScramServer("SHA-256", {"tls-server-end-point": b"cert-hash"}, plus=True)
    with pytest.raises(SaslFailure) as failure:
        server.client_first(b"p=" + cb_type + b",,n=user,r=abc")
    assert failure.value.condition == "not-authorized"


def test_slixmpp_client_logs_in_with_scram_sha_256_plus_tls_exporter():
    """An independent client (slixmpp) completes SCRAM-SHA-256-PLUS and accepts our v=."""
    client = SlixmppScram(
        "SCRAM-SHA-256-PLUS",
        {"username": b"user", "password": b"pencil", "authzid": b"", "channel_binding": b"ekm"},
        {"encrypted": True, "tls_version": "TLSv1.3", "binding_proposed": True},
    )
    server = ScramServer.for_mechanism("SCRAM-SHA-256-PLUS", {"tls-exporter": b"ekm"})
    assert server.client_first(client.process(b"")) == "user"
    client_final = client.process(server.server_first(credentials()))
    client.process(server.client_final(client_final))  # raises if v= is wrong


def test_slixmpp_client_logs_in_with_scram_sha_1():
    """slixmpp completes plain SCRAM-SHA-1 too."""
    client = SlixmppScram(
        "SCRAM-SHA-1",
        {"username": b"user", "password": b"pencil", "authzid": b"", "channel_binding": b""},
        {"encrypted": True, "tls_version": "TLSv1.3", "binding_proposed": False},
    )
    server = ScramServer.for_mechanism("SCRAM-SHA-1")
    server.client_first(client.process(b""))
    client_final = client.process(server.server_first(credentials(hash_name="SHA-1")))
    client.process(server.client_final(client_final))


# Offered mechanisms (RFC 6120 §6.4.1) and choosing one.


def test_without_tls_only_scram_without_plus_is_offered():
    """No PLAIN and no -PLUS outside TLS."""
    assert offered_mechanisms(tls=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


def test_with_tls_but_no_channel_binding_plain_is_added():
    """PLAIN is offered inside TLS; -PLUS needs a channel binding we know."""
    assert offered_mechanisms(True, []) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert offered_mechanisms(True, ["tls-foo"]) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


@pytest.mark.parametrize("cb_type", ["tls-unique", "tls-server-end-point", "tls-exporter"])
def test_each_known_binding_type_makes_plus_offered(cb_type):
    """Any one binding type SCRAM knows is enough for -PLUS."""
    assert offered_mechanisms(True, [cb_type])[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]


def test_with_channel_binding_plus_mechanisms_come_first():
    """-PLUS variants are offered, strongest first, when the connection can bind."""
    assert offered_mechanisms(True, ["tls-exporter"]) == [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ]


@pytest.mark.parametrize("mechanism", ["DIGEST-MD5", "SCRAM-SHA-512", "SCRAM-SHA-1-PLUS"])
def test_unknown_or_unavailable_mechanism_is_invalid_mechanism(mechanism):
    """RFC 6120 §6.5.5: a mechanism we do not offer gets <invalid-mechanism/>."""
    with pytest.raises(SaslFailure) as failure:
        ScramServer.for_mechanism(mechanism)
    assert failure.value.condition == "invalid-mechanism"


def test_for_mechanism_reads_hash_and_plus_from_the_name():
    """SCRAM-SHA-1-PLUS selects SHA-1 with channel binding."""
    server = ScramServer.for_mechanism("SCRAM-SHA-1-PLUS", CHANNEL_BINDING)
    assert (server.hash_name, server.plus, server.mechanism) == ("SHA-1", True, "SCRAM-SHA-1-PLUS")


# Key derivation and PLAIN.


def test_derive_keys_normalizes_the_password_with_opaque_string():
    """RFC 8265 §4.2: a no-break space in the password is mapped to an ASCII space."""
    assert derive_keys("pen\u00a0cil", SALT, 4096, "SHA-1") == derive_keys(
        "pen cil", SALT, 4096, "SHA-1"
    )


def test_plain_message_splits_into_authzid_authcid_password():
    """RFC 4616 §2: [authzid] NUL authcid NUL passwd."""
    assert parse_plain(b"\0Juliet\0r0m30") == ("", "juliet", "r0m30")
    assert parse_plain(b"juliet@example.com\0juliet\0r0m30") == (
        "juliet@example.com",
        "juliet",
        "r0m30",
    )


@pytest.mark.parametrize(
    "message",
    [b"juliet r0m30", b"\0juliet", b"\0\0r0m30", b"\0juliet\0", b"\0a\0b\0c", b"\0\xff\0pw"],
    ids=["no-nul", "one-nul", "empty-authcid", "empty-password", "three-nuls", "not-utf8"],
)
def test_malformed_plain_message_is_malformed_request(message):
    """Anything but two NULs around a non-empty authcid and password is malformed."""
    with pytest.raises(SaslFailure) as failure:
        parse_plain(message)
    assert failure.value.condition == "malformed-request"
