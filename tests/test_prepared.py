"""Prepared login reads (xmpp/prepared.py): the ORM's SQL and conversions,
compiled once, on the suite's database (SQLite, or PostgreSQL with DATABASE_URL)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from xmpp.models import RosterItem, User
from xmpp.prepared import PreparedQuery
from xmpp.roster import ROW_FIELDS

ROSTER_ROWS = PreparedQuery(
    lambda user_id: RosterItem.objects.filter(user_id=user_id).values_list(*ROW_FIELDS)
)


@pytest.fixture
def two_rosters(db):
    juliet = User.objects.create(username="juliet")
    romeo = User.objects.create(username="romeo")
    RosterItem.objects.create(
        user=juliet,
        jid="romeo@localhost",
        groups=["Montague", "Verona"],
        subscription="both",
        pending_in=True,
        version=7,
    )
    RosterItem.objects.create(user=romeo, jid="juliet@localhost", listed=False)
    return juliet, romeo


def test_rows_are_what_the_orm_gives(two_rosters):
    """Same values and types as values_list(): booleans, JSON lists, integers."""
    for user in two_rosters:
        expected = list(RosterItem.objects.filter(user=user).values_list(*ROW_FIELDS))
        assert ROSTER_ROWS.rows(user.id) == expected
    row = ROSTER_ROWS.rows(two_rosters[0].id)[0]
    assert row[ROW_FIELDS.index("groups")] == ["Montague", "Verona"]
    assert row[ROW_FIELDS.index("pending_in")] is True
    assert row[ROW_FIELDS.index("removed")] is False


def test_each_call_is_one_statement_with_its_arguments(two_rosters):
    """Compiled once, then one query per call, for whichever argument it is given."""
    juliet, romeo = two_rosters
    ROSTER_ROWS.rows(juliet.id)
    with CaptureQueriesContext(connection) as queries:
        assert [r[0] for r in ROSTER_ROWS.rows(romeo.id)] == ["juliet@localhost"]
        assert [r[0] for r in ROSTER_ROWS.rows(juliet.id)] == ["romeo@localhost"]
        assert ROSTER_ROWS.rows(juliet.id + romeo.id + 1000) == []
    assert len(queries) == 3


def test_a_query_whose_parameters_are_not_its_arguments_is_refused(db):
    """A constant parameter would take an argument's place: refused when compiled."""
    query = PreparedQuery(
        lambda user_id: RosterItem.objects.filter(user_id=user_id, jid="x").values_list("id")
    )
    with pytest.raises(ValueError, match="cannot be prepared"):
        query.rows(1)


def test_none_is_refused_as_an_argument(db):
    """None compiles to IS NULL, another statement than = %s."""
    with pytest.raises(ValueError, match="None"):
        ROSTER_ROWS.rows(None)
