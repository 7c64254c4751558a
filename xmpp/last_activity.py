"""Last Activity (XEP-0012): server uptime, and how long ago a user logged out.

Owns `{jabber:iq:last}query` gets:

- to the server (§5): the seconds since this process started;
- to a user's bare JID (§3), answered on the user's behalf: 0 while the user
  has an available resource, else the seconds since its last session ended,
  with the status text of its last unavailable presence; <item-not-found/>
  if it never logged out. Only the user itself and contacts to whom it
  grants its presence (subscription 'from' or 'both' in its roster) may ask;
  anyone else gets <forbidden/> (§3, §8). No such account is
  <service-unavailable/> (RFC 6121 §8.5.1).

The logout time and status are written when an account's last session ends
(`record_logout`, a session-closed hook). The status of each resource's last
unavailable presence is noted in the account's in-memory state by
`note_unavailable_status`, a presence transform the core does not call yet.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction

from .models import LastActivity
from .orm_thread import orm_thread
from .plugins import IqRequest, plugins
from .protocol.errors import StanzaError
from .protocol.jid import JID
from .writer import BatchedWriter

if TYPE_CHECKING:
    from .bound_session import BoundSession

log = logging.getLogger(__name__)

NS_LAST = "jabber:iq:last"
QUERY_TAG = f"{{{NS_LAST}}}query"
STATUS_TAG = "{jabber:client}status"
# Key in AccountState.data: {resource: status text of its last unavailable presence}.
STATUS_KEY = "last_activity.status"
# Subscriptions under which the owner's presence is shared with the contact (RFC 6121 §3).
SHARING_SUBSCRIPTIONS = frozenset({"from", "both"})

_started = time.monotonic()


@plugins.iq(QUERY_TAG, scopes=("server",), feature=NS_LAST)
def uptime(request: IqRequest) -> Element:
    """§5: the server's uptime, without character data."""
    return _query(int(time.monotonic() - _started))


@plugins.iq(QUERY_TAG, scopes=("account",), feature=NS_LAST)
async def last_logout(request: IqRequest) -> Element:
    owner = request.to
    row = (
        await get_user_model()
        .objects.filter(username=owner.local, is_active=True)
        .values_list("last_activity__logout", "last_activity__status")
        .afirst()
    )
    if row is None:
        raise StanzaError("service-unavailable")
    if request.sender.bare != owner and not await _shares_presence(request, owner):
        raise StanzaError("forbidden", "you are not subscribed to this user's presence")
    if request.router.sessions.available(owner):
        return _query(0)  # §3: online now
    logout, status = row
    if logout is None:
        raise StanzaError("item-not-found", "this user has not logged out yet")
    now = datetime.datetime.now(datetime.UTC)
    return _query(max(0, int((now - logout).total_seconds())), status)


async def _shares_presence(request: IqRequest, owner: JID) -> bool:
    """Whether `owner`'s roster grants the requester its presence (RFC 6121 §3)."""
    from .roster import subscription_of  # lazily: the roster app may load after this one

    subscription = await subscription_of(owner, request.sender.bare, request.router)
    return subscription in SHARING_SUBSCRIPTIONS


def _query(seconds: int, status: str = "") -> Element:
    query = Element(QUERY_TAG, {"seconds": str(seconds)})
    if status:
        query.text = status
    return query


def note_unavailable_status(session: BoundSession, presence: Element) -> None:
    """Remember the status text of a resource's unavailable broadcast presence;
    an available one clears it."""
    if session.account is None or session.jid is None:
        return
    statuses = session.account.data.setdefault(STATUS_KEY, {})
    if presence.get("type") == "unavailable":
        statuses[session.jid.resource] = presence.findtext(STATUS_TAG) or ""
    else:
        statuses.pop(session.jid.resource, None)


@plugins.on_session_closed
def record_logout(session: BoundSession) -> None:
    """When an account's last session ends, store the time and that session's
    last unavailable status. The core does not await close hooks, so the write
    runs as a task."""
    bare = session.jid.bare
    if session.server.sessions.has_sessions(bare):
        return
    statuses = session.account.data.get(STATUS_KEY, {}) if session.account else {}
    status = statuses.get(session.jid.resource, "")
    when = datetime.datetime.now(datetime.UTC)
    logout_writer.record(session.server, bare.local, when, status)


class LogoutWriter:
    """Logout records through a group-commit BatchedWriter (xmpp/writer.py):
    whatever piled up while one batch was written goes in the next, as one
    upsert in which an account's last logout wins. The upsert is idempotent,
    so a failed batch is tried once more, then dropped (logged)."""

    def __init__(self) -> None:
        self.writer: BatchedWriter[tuple[str, datetime.datetime, str]] = BatchedWriter(
            "logout", _commit_logouts, retry=True
        )

    def record(self, server, username: str, when: datetime.datetime, status: str) -> None:
        self.writer.submit((username, when, status))


async def _commit_logouts(records: list[tuple[str, datetime.datetime, str]]) -> None:
    # Through orm_thread, so that a batch shares its hop to the sync thread
    # with the logins' look-ups (xmpp/orm_thread.py).
    await orm_thread.call(_store_logouts, records)


def _store_logouts(records: list[tuple[str, datetime.datetime, str]]) -> None:
    """One upsert per account of the batch, its last logout winning, in one
    transaction. Accounts removed meanwhile (XEP-0077 cancellation) simply
    drop out: the row is inserted from the account's, if there is one.

    Written in SQL rather than as bulk_create(update_conflicts=True) after a
    look-up of the user ids: the statement is the same for every batch, so
    nothing is compiled per logout, and the look-up goes into it."""
    batch = {username: (when, status) for username, when, status in records}
    connection = connections[router.db_for_write(LastActivity)]
    when_value = connection.ops.adapt_datetimefield_value
    params = [(when_value(when), status, name) for name, (when, status) in batch.items()]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(_logout_upsert(connection), params)


def _logout_upsert(connection) -> str:
    """INSERT ... SELECT ... ON CONFLICT DO UPDATE, which SQLite (3.24+) and
    PostgreSQL both take; the SELECT's WHERE keeps SQLite from reading ON
    CONFLICT as a join's ON (sqlite.org/lang_upsert.html, "Parsing Ambiguity")."""
    quote = connection.ops.quote_name
    users = get_user_model()._meta
    table = quote(LastActivity._meta.db_table)
    user, logout, status = (
        quote(LastActivity._meta.get_field(name).column) for name in ("user", "logout", "status")
    )
    return (
        f"INSERT INTO {table} ({user}, {logout}, {status}) "
        f"SELECT {quote(users.pk.column)}, %s, %s FROM {quote(users.db_table)} "
        f"WHERE {quote(users.get_field('username').column)} = %s "
        f"ON CONFLICT ({user}) DO UPDATE SET {logout} = excluded.{logout}, "
        f"{status} = excluded.{status}"
    )


logout_writer = LogoutWriter()


plugins.presence_transform(note_unavailable_status)
