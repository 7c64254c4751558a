"""The presence subscription state machine of RFC 6121 §3, as the tables of
its Appendix A: pure functions, no I/O.

A state is the subscription between a user and one contact, from the user's
side: (subscription, pending out, pending in). The nine states of
Appendix A.1 are named as the RFC names them.
"""

from __future__ import annotations

from typing import NamedTuple


class SubState(NamedTuple):
    subscription: str  # "none" | "to" | "from" | "both"
    pending_out: bool
    pending_in: bool


NONE = SubState("none", False, False)
NONE_OUT = SubState("none", True, False)
NONE_IN = SubState("none", False, True)
NONE_OUT_IN = SubState("none", True, True)
TO = SubState("to", False, False)
TO_IN = SubState("to", False, True)
FROM = SubState("from", False, False)
FROM_OUT = SubState("from", True, False)
BOTH = SubState("both", False, False)

STATE_NAMES = {
    NONE: "None",
    NONE_OUT: "None + Pending Out",
    NONE_IN: "None + Pending In",
    NONE_OUT_IN: "None + Pending Out/In",
    TO: "To",
    TO_IN: "To + Pending In",
    FROM: "From",
    FROM_OUT: "From + Pending Out",
    BOTH: "Both",
}

# Appendix A.2: the user's server processing what the user sends.
OUTBOUND = {
    "subscribe": {  # A.2.1
        NONE: NONE_OUT,
        NONE_OUT: NONE_OUT,
        NONE_IN: NONE_OUT_IN,
        NONE_OUT_IN: NONE_OUT_IN,
        TO: TO,
        TO_IN: TO_IN,
        FROM: FROM_OUT,
        FROM_OUT: FROM_OUT,
        BOTH: BOTH,
    },
    "unsubscribe": {  # A.2.2
        NONE: NONE,
        NONE_OUT: NONE,
        NONE_IN: NONE_IN,
        NONE_OUT_IN: NONE_IN,
        TO: NONE,
        TO_IN: NONE_IN,
        FROM: FROM,
        FROM_OUT: FROM,
        BOTH: FROM,
    },
    "subscribed": {  # A.2.3
        NONE: NONE,
        NONE_OUT: NONE_OUT,
        NONE_IN: FROM,
        NONE_OUT_IN: FROM_OUT,
        TO: TO,
        TO_IN: BOTH,
        FROM: FROM,
        FROM_OUT: FROM_OUT,
        BOTH: BOTH,
    },
    "unsubscribed": {  # A.2.4
        NONE: NONE,
        NONE_OUT: NONE_OUT,
        NONE_IN: NONE,
        NONE_OUT_IN: NONE_OUT,
        TO: TO,
        TO_IN: TO,
        FROM: NONE,
        FROM_OUT: NONE_OUT,
        BOTH: TO,
    },
}

# Appendix A.3: the contact's server processing what arrives for the contact
# (the state here is the contact's, towards the sender).
INBOUND = {
    "subscribe": {  # A.3.1
        NONE: NONE_IN,
        NONE_OUT: NONE_OUT_IN,
        NONE_IN: NONE_IN,
        NONE_OUT_IN: NONE_OUT_IN,
        TO: TO_IN,
        TO_IN: TO_IN,
        FROM: FROM,
        FROM_OUT: FROM_OUT,
        BOTH: BOTH,
    },
    "unsubscribe": {  # A.3.2
        NONE: NONE,
        NONE_OUT: NONE_OUT,
        NONE_IN: NONE,
        NONE_OUT_IN: NONE_OUT,
        TO: TO,
        TO_IN: TO,
        FROM: NONE,
        FROM_OUT: NONE_OUT,
        BOTH: TO,
    },
    "subscribed": {  # A.3.3
        NONE: NONE,
        NONE_OUT: TO,
        NONE_IN: NONE_IN,
        NONE_OUT_IN: TO_IN,
        TO: TO,
        TO_IN: TO_IN,
        FROM: FROM,
        FROM_OUT: BOTH,
        BOTH: BOTH,
    },
    "unsubscribed": {  # A.3.4
        NONE: NONE,
        NONE_OUT: NONE,
        NONE_IN: NONE_IN,
        NONE_OUT_IN: NONE_IN,
        TO: NONE,
        TO_IN: NONE_IN,
        FROM: FROM,
        FROM_OUT: FROM,
        BOTH: FROM,
    },
}

# §3.4: a pre-approval is recorded for an outbound "subscribed" in these
# states (where it changes nothing), and honoured for an inbound "subscribe".
PREAPPROVABLE = frozenset({NONE, NONE_OUT, TO})
# §3.1.3: a subscribe from a contact who already has a subscription is
# answered by the server with "subscribed", without asking the user.
ALREADY_APPROVED = frozenset({FROM, FROM_OUT, BOTH})
# A state in which the contact receives the user's presence.
SENDS_PRESENCE = frozenset({"from", "both"})
RECEIVES_PRESENCE = frozenset({"to", "both"})


def approve(state: SubState) -> SubState:
    """The state after the server approves an inbound subscribe by itself
    (pre-approval, §3.4): as if the user had sent "subscribed"."""
    return OUTBOUND["subscribed"][INBOUND["subscribe"][state]]
