"""The sans-IO stream parser (RFC 6120 §4, §11), without a socket."""

import pytest

from xmpp.protocol.errors import StreamError
from xmpp.protocol.parser import StreamClosed, StreamOpened, StreamParser
from xmpp.protocol.xml import serialize

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
    b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
)


def opened(**limits) -> StreamParser:
    parser = StreamParser(**limits)
    assert isinstance(parser.feed(HEADER)[0], StreamOpened)
    return parser


def test_stream_header_gives_attributes_and_default_namespace():
    """The header event carries the header's attributes and its default namespace."""
    event = StreamParser().feed(HEADER)[0]
    assert event.attrs == {"to": "localhost", "version": "1.0"}
    assert event.default_ns == "jabber:client"


def test_stanza_split_across_reads_is_one_event():
    """A stanza arrives whole, however the bytes were split."""
    parser = opened()
    data = b"<message to='bob@localhost'><body>hi &amp; bye</body></message>"
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    assert len(events) == 1
    assert events[0].tag == "{jabber:client}message"
    assert events[0].findtext("{jabber:client}body") == "hi & bye"


def test_whitespace_keepalive_produces_no_event():
    """RFC 6120 §4.6.1: whitespace between stanzas is a keepalive, not a stanza."""
    assert opened().feed(b" \n ") == []


def test_closing_tag_is_stream_closed():
    assert isinstance(opened().feed(b"</stream:stream>")[0], StreamClosed)


def test_root_other_than_stream_is_invalid_namespace():
    with pytest.raises(StreamError) as err:
        StreamParser().feed(b"<stream xmlns='jabber:client'>")
    assert err.value.condition == "invalid-namespace"


@pytest.mark.parametrize(
    "payload",
    [b"<!-- a comment -->", b"<?php echo 1; ?>"],
    ids=["comment", "processing-instruction"],
)
def test_restricted_xml_is_refused(payload):
    """RFC 6120 §11.1: DTDs, comments and processing instructions are restricted-xml."""
    with pytest.raises(StreamError) as err:
        opened().feed(payload)
    assert err.value.condition == "restricted-xml"


def test_dtd_before_stream_header_is_refused():
    with pytest.raises(StreamError) as err:
        StreamParser().feed(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>")
    assert err.value.condition == "restricted-xml"


def test_dtd_inside_the_stream_is_not_well_formed():
    """XML 1.0 §2.8 allows a DOCTYPE only in the prolog; inside the stream it is a syntax error."""
    with pytest.raises(StreamError) as err:
        opened().feed(b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>]>")
    assert err.value.condition == "not-well-formed"


def test_entity_other_than_the_predefined_five_is_restricted_xml():
    """RFC 6120 §11.1, §4.9.3.18: an entity reference other than the predefined
    entities is restricted XML."""
    with pytest.raises(StreamError) as err:
        opened().feed(b"<message><body>&xxe;</body></message>")
    assert err.value.condition == "restricted-xml"


def test_malformed_xml_is_not_well_formed():
    with pytest.raises(StreamError) as err:
        opened().feed(b"<message><body></message>")
    assert err.value.condition == "not-well-formed"


def test_oversized_stanza_is_policy_violation():
    parser = opened(max_stanza_size=1000)
    with pytest.raises(StreamError) as err:
        for _ in range(10):
            parser.feed(b"<message><body>" + b"x" * 500)
    assert err.value.condition == "policy-violation"


def test_oversized_stanza_arriving_whole_is_policy_violation():
    """The limit holds for a stanza that arrives complete in one read, too."""
    with pytest.raises(StreamError) as err:
        opened(max_stanza_size=1000).feed(b"<message><body>" + b"x" * 2000 + b"</body></message>")
    assert err.value.condition == "policy-violation"


def test_unfinished_open_tag_is_bounded_too():
    """An open tag that never ends cannot grow the parser's buffer without limit."""
    parser = opened(max_stanza_size=1000)
    with pytest.raises(StreamError) as err:
        parser.feed(b"<message to='" + b"a" * 2000)
    assert err.value.condition == "policy-violation"


def test_many_small_stanzas_are_not_limited_by_stanza_size():
    parser = opened(max_stanza_size=1000)
    for _ in range(100):
        assert len(parser.feed(b"<message><body>" + b"x" * 500 + b"</body></message>")) == 1


def test_depth_limit_is_policy_violation():
    with pytest.raises(StreamError) as err:
        opened(max_depth=5).feed(b"<a>" * 10)
    assert err.value.condition == "policy-violation"


def test_attribute_limit_is_policy_violation():
    attrs = b" ".join(b"a%d='1'" % i for i in range(20))
    with pytest.raises(StreamError) as err:
        opened(max_attributes=10).feed(b"<message " + attrs + b"/>")
    assert err.value.condition == "policy-violation"


def test_serialize_round_trips_namespaces_and_xml_lang():
    """Child namespaces are declared where they change; xml:lang keeps its prefix."""
    stanza = opened().feed(
        b"<message xml:lang='en' to='a@b'><body>&lt;hi&gt;</body>"
        b"<x xmlns='urn:x' a='&quot;'/></message>"
    )[0]
    assert serialize(stanza) == (
        b'<message xml:lang="en" to="a@b"><body>&lt;hi&gt;</body>'
        b'<x xmlns="urn:x" a="&quot;"/></message>'
    )
