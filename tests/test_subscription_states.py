"""The presence subscription states of RFC 6121 Appendix A.

The eight tables are written out below from the RFC's text (A.2.1-A.2.4,
the user's server processing what the user sends; A.3.1-A.3.4, the
contact's server processing what arrives for the contact), not imported
from the code under test. They are checked twice: row by row against
xmpp/subscriptions.py, and over the wire, where two slixmpp clients are
driven into each of the nine states and the user then sends each of the
four subscription stanzas.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from xmpp.subscriptions import (
    ALREADY_APPROVED,
    INBOUND,
    OUTBOUND,
    PREAPPROVABLE,
    SubState,
    approve,
)

from .conftest import PASSWORD
from .roster_clients import Item, barrier, drive_to_state, login, logout, server_roster

# Appendix A.1: the nine defined states, as (subscription, pending out, pending in).
STATES = {
    "None": ("none", False, False),
    "None + Pending Out": ("none", True, False),
    "None + Pending In": ("none", False, True),
    "None + Pending Out+In": ("none", True, True),
    "To": ("to", False, False),
    "To + Pending In": ("to", False, True),
    "From": ("from", False, False),
    "From + Pending Out": ("from", True, False),
    "Both": ("both", False, False),
}
SAME = "no state change"

# Appendix A.2: (existing state, route?, new state).
OUTBOUND_TABLES = {
    "subscribe": [  # A.2.1
        ("None", "yes", "None + Pending Out"),
        ("None + Pending Out", "yes", SAME),
        ("None + Pending In", "yes", "None + Pending Out+In"),
        ("None + Pending Out+In", "yes", SAME),
        ("To", "yes", SAME),
        ("To + Pending In", "yes", SAME),
        ("From", "yes", "From + Pending Out"),
        ("From + Pending Out", "yes", SAME),
        ("Both", "yes", SAME),
    ],
    "unsubscribe": [  # A.2.2
        ("None", "yes", SAME),
        ("None + Pending Out", "yes", "None"),
        ("None + Pending In", "yes", SAME),
        ("None + Pending Out+In", "yes", "None + Pending In"),
        ("To", "yes", "None"),
        ("To + Pending In", "yes", "None + Pending In"),
        ("From", "yes", SAME),
        ("From + Pending Out", "yes", "From"),
        ("Both", "yes", "From"),
    ],
    "subscribed": [  # A.2.3
        ("None", "no", SAME),
        ("None + Pending Out", "no", SAME),
        ("None + Pending In", "yes", "From"),
        ("None + Pending Out+In", "yes", "From + Pending Out"),
        ("To", "no", SAME),
        ("To + Pending In", "yes", "Both"),
        ("From", "no", SAME),
        ("From + Pending Out", "no", SAME),
        ("Both", "no", SAME),
    ],
    "unsubscribed": [  # A.2.4
        ("None", "no", SAME),
        ("None + Pending Out", "no", SAME),
        ("None + Pending In", "yes", "None"),
        ("None + Pending Out+In", "yes", "None + Pending Out"),
        ("To", "no", SAME),
        ("To + Pending In", "yes", "To"),
        ("From", "yes", "None"),
        ("From + Pending Out", "yes", "None + Pending Out"),
        ("Both", "yes", "To"),
    ],
}

# Appendix A.3: (existing state, deliver?, new state); "no *" is the
# server's auto-reply of "subscribed" (§3.1.3).
INBOUND_TABLES = {
    "subscribe": [  # A.3.1
        ("None", "yes", "None + Pending In"),
        ("None + Pending Out", "yes", "None + Pending Out+In"),
        ("None + Pending In", "no", SAME),
        ("None + Pending Out+In", "no", SAME),
        ("To", "yes", "To + Pending In"),
        ("To + Pending In", "no", SAME),
        ("From", "no *", SAME),
        ("From + Pending Out", "no *", SAME),
        ("Both", "no *", SAME),
    ],
    "unsubscribe": [  # A.3.2
        ("None", "no", SAME),
        ("None + Pending Out", "no", SAME),
        ("None + Pending In", "yes", "None"),
        ("None + Pending Out+In", "yes", "None + Pending Out"),
        ("To", "no", SAME),
        ("To + Pending In", "yes", "To"),
        ("From", "yes", "None"),
        ("From + Pending Out", "yes", "None + Pending Out"),
        ("Both", "yes", "To"),
    ],
    "subscribed": [  # A.3.3
        ("None", "no", SAME),
        ("None + Pending Out", "yes", "To"),
        ("None + Pending In", "no", SAME),
        ("None + Pending Out+In", "yes", "To + Pending In"),
        ("To", "no", SAME),
        ("To + Pending In", "no", SAME),
        ("From", "no", SAME),
        ("From + Pending Out", "yes", "Both"),
        ("Both", "no", SAME),
    ],
    "unsubscribed": [  # A.3.4
        ("None", "no", SAME),
        ("None + Pending Out", "yes", "None"),
        ("None + Pending In", "no", SAME),
        ("None + Pending Out+In", "yes", "None + Pending In"),
        ("To", "yes", "None"),
        ("To + Pending In", "yes", "None + Pending In"),
        ("From", "no", SAME),
        ("From + Pending Out", "yes", "From"),
        ("Both", "yes", "From"),
    ],
}

KINDS = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def rows(tables: dict) -> list:
    return [
        pytest.param(kind, existing, action, new, id=f"{kind}:{existing}")
        for kind in KINDS
        for existing, action, new in tables[kind]
    ]


def after(table: list, existing: str) -> tuple[str, str]:
    """(route or deliver, new state) for `existing` in an Appendix A table."""
    for state, action, new in table:
        if state == existing:
            return action, existing if new == SAME else new
    raise KeyError(existing)


def test_the_written_tables_cover_every_state_once():
    """Each of the eight tables has one row for each of the nine states of A.1."""
    for table in itertools.chain(OUTBOUND_TABLES.values(), INBOUND_TABLES.values()):
        assert sorted(state for state, _, _ in table) == sorted(STATES)


# -- (a) xmpp/subscriptions.py row by row -------------------------------------


@pytest.mark.parametrize(("kind", "existing", "route", "new"), rows(OUTBOUND_TABLES))
def test_outbound_transition_follows_appendix_a2(kind, existing, route, new):
    """The user's server changes the user's state for what the user sends as
    Appendix A.2 says."""
    expected = STATES[existing if new == SAME else new]
    assert OUTBOUND[kind][SubState(*STATES[existing])] == expected


@pytest.mark.parametrize(("kind", "existing", "deliver", "new"), rows(INBOUND_TABLES))
def test_inbound_transition_follows_appendix_a3(kind, existing, deliver, new):
    """The contact's server changes the contact's state for what arrives as
    Appendix A.3 says."""
    expected = STATES[existing if new == SAME else new]
    assert INBOUND[kind][SubState(*STATES[existing])] == expected


def test_already_approved_states_are_the_auto_reply_rows_of_a31():
    """A subscribe is answered by the server with "subscribed" exactly in the
    states marked "no *" in A.3.1: From, From + Pending Out, Both (§3.1.3)."""
    auto_reply = {state for state, deliver, _ in INBOUND_TABLES["subscribe"] if deliver == "no *"}
    assert {SubState(*STATES[s]) for s in auto_reply} == set(ALREADY_APPROVED)


def test_preapproval_is_recorded_in_none_none_pending_out_and_to():
    """An outbound "subscribed" is a pre-approval in the states None,
    None + Pending Out and To (§3.4.2 item 3), and in no other state."""
    expected = {"None", "None + Pending Out", "To"}
    assert {SubState(*STATES[s]) for s in expected} == set(PREAPPROVABLE)


@pytest.mark.parametrize(
    ("existing", "approved"),
    [("None", "From"), ("None + Pending Out", "From + Pending Out"), ("To", "Both")],
)
def test_approving_a_preapproved_subscribe_gives_the_state_of_an_approval(existing, approved):
    """A pre-approved subscribe (§3.4) leaves the contact's side where A.3.1
    then A.2.3 would: the subscriber gains a subscription."""
    assert approve(SubState(*STATES[existing])) == STATES[approved]


# -- (b) over the wire ---------------------------------------------------------

# The contact's state is the user's, seen from the other side.
MIRROR = {
    "None": "None",
    "None + Pending Out": "None + Pending In",
    "None + Pending In": "None + Pending Out",
    "None + Pending Out+In": "None + Pending Out+In",
    "To": "From",
    "To + Pending In": "From + Pending Out",
    "From": "To",
    "From + Pending Out": "To + Pending In",
    "Both": "Both",
}
# Whether each side has a roster item after STEPS_TO_STATE: a contact who
# only asked to subscribe is not added to the roster (§3.1.3); sending
# "subscribe" (§3.1.2) or approving a request (§3.1.5) adds it.
USER_LISTED = {state: state not in ("None", "None + Pending In") for state in STATES}
CONTACT_LISTED = {state: MIRROR[state] not in ("None", "None + Pending In") for state in STATES}
PREAPPROVAL_STATES = ("None", "None + Pending Out", "To")  # §3.4.2 item 3

CASES = list(itertools.product(STATES, KINDS))


def roster_view(state: str, approved: bool = False) -> Item:
    """The subscription and ask of a roster item in `state` (A.1)."""
    subscription, pending_out, _ = STATES[state]
    return Item(subscription, "subscribe" if pending_out else None, approved)


def essentials(item: Item | None) -> Item | None:
    """Only what a subscription state shows of an item."""
    return None if item is None else Item(item.subscription, item.ask, item.approved)


@pytest.fixture(scope="module")
def pairs(xmpp_server):
    """A fresh user and contact for every case, registered in one go."""
    names = {case: (f"sst{i}-user", f"sst{i}-contact") for i, case in enumerate(CASES)}
    lines = "".join(f"{name} {PASSWORD}\n" for pair in names.values() for name in pair)
    xmpp_server.manage("register", "--from-file", "-", input=lines)
    return names


@pytest.mark.parametrize(("state", "kind"), CASES, ids=[f"{s}:{k}" for s, k in CASES])
def test_subscription_stanza_over_the_wire_follows_appendix_a(xmpp_server, pairs, state, kind):
    """With the user in `state` towards the contact, the user sends `kind`:
    the user's roster item is pushed as A.2 says (a "subscribed" in None,
    None + Pending Out or To is a pre-approval instead, §3.4); the stanza
    reaches the contact only if A.2 routes it and A.3 delivers it; the
    contact's roster item is pushed as A.3 says."""
    user_name, contact_name = pairs[(state, kind)]
    route, user_after = after(OUTBOUND_TABLES[kind], state)
    preapproval = kind == "subscribed" and state in PREAPPROVAL_STATES
    contact_before = MIRROR[state]
    if route == "yes":
        deliver, contact_after = after(INBOUND_TABLES[kind], contact_before)
    else:
        deliver, contact_after = "no", contact_before

    user_listed = (
        USER_LISTED[state]
        or kind == "subscribe"
        or (kind == "subscribed" and (user_after != state or preapproval))
    )
    # Only a contact in the roster is pushed (§2.1.6, §3.1.3).
    user_pushed = user_listed and (
        user_after != state or preapproval or user_listed != USER_LISTED[state]
    )
    expected_user = roster_view(user_after, preapproval) if user_listed else None
    expected_contact = roster_view(contact_after) if CONTACT_LISTED[state] else None

    async def scenario():
        user = await login(xmpp_server, user_name)
        contact = await login(xmpp_server, contact_name)
        user_jid, contact_jid = user.boundjid.bare, contact.boundjid.bare
        try:
            await drive_to_state(user, contact, state)
            # The starting point is the one the RFC's state describes.
            before = await server_roster(user)
            assert essentials(before.get(contact_jid)) == (
                roster_view(state) if USER_LISTED[state] else None
            )
            before = await server_roster(contact)
            assert essentials(before.get(user_jid)) == (
                roster_view(contact_before) if CONTACT_LISTED[state] else None
            )
            user_mark, contact_mark = len(user.pushes), len(contact.pushes)
            received_mark = len(contact.received)

            user.send_presence(pto=contact_jid, ptype=kind)
            await barrier(user, contact)

            user_pushes = [essentials(i) for i in user.pushes_for(contact_jid, user_mark)]
            assert user_pushes == ([expected_user] if user_pushed else [])
            assert essentials((await server_roster(user)).get(contact_jid)) == expected_user

            delivered = kind in contact.received_from(user_jid, received_mark)
            assert delivered == (deliver == "yes")

            contact_pushed = contact_after != contact_before and CONTACT_LISTED[state]
            contact_pushes = [essentials(i) for i in contact.pushes_for(user_jid, contact_mark)]
            assert contact_pushes == ([expected_contact] if contact_pushed else [])
            assert essentials((await server_roster(contact)).get(user_jid)) == expected_contact
        finally:
            await logout(user, contact)

    asyncio.run(scenario())
