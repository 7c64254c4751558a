"""The admission bookkeeping (xmpp/admission.py) without a server."""

from __future__ import annotations

from xmpp.admission import Admission


def test_the_oldest_unauthenticated_stream_makes_room():
    admission = Admission()
    assert [admission.opened(n, "a", 3) for n in range(3)] == [None, None, None]
    assert admission.opened(3, "a", 3) == 0
    assert admission.opened(4, "a", 3) == 1
    assert admission.opened(10, "b", 3) is None  # addresses are counted apart
    assert admission.unauthenticated("a") == 3 and admission.streams == 4


def test_authenticated_streams_leave_the_unauthenticated_count():
    admission = Admission()
    for n in range(3):
        admission.opened(n, "a", 3)
    assert admission.authenticated(0, "a", 0)
    assert admission.opened(3, "a", 3) is None  # 0 is a session now
    assert admission.opened(4, "a", 3) == 1
    assert admission.sessions("a") == 1 and admission.unauthenticated("a") == 3


def test_an_evicted_stream_is_not_authenticated_nor_counted_twice():
    admission = Admission()
    admission.opened(0, "a", 1)
    assert admission.opened(1, "a", 1) == 0
    assert not admission.authenticated(0, "a", 0)
    admission.closed(0, "a")
    assert admission.streams == 1
    admission.closed(1, "a")
    assert admission.streams == 0 and admission.unauthenticated("a") == 0


def test_sessions_per_address_can_be_capped():
    admission = Admission()
    for n in range(3):
        admission.opened(n, "a", 10)
    assert admission.authenticated(0, "a", 2)
    assert admission.authenticated(1, "a", 2)
    assert not admission.authenticated(2, "a", 2)
    admission.closed(0, "a")
    assert admission.authenticated(2, "a", 2)


def test_the_global_cap():
    admission = Admission()
    admission.opened(0, "a", 10)
    admission.opened(1, "b", 10)
    assert not admission.has_room(2)
    admission.closed(1, "b")
    assert admission.has_room(2)
