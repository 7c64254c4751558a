"""Optional logging of every SQL statement the server runs (XMPP_LOG_SQL=true).

For operators chasing load, and for the tests that prove the routing path
never waits on the database: each statement is logged on "xmpp.sql" with
who ran it: the batched writer whose batch it belongs to (xmpp/writer.py),
or "request" for a query someone awaited, and the thread it ran in (the
ORM's async calls run in a worker thread).
"""

from __future__ import annotations

import logging
import threading

from django.db.backends.signals import connection_created

from .writer import current_writer

log = logging.getLogger("xmpp.sql")


def _log_statement(execute, sql, params, many, context):
    verb = sql.split(None, 1)[0] if sql else "?"
    origin = current_writer.get()
    by = f"writer:{origin}" if origin else "request"
    thread = threading.current_thread().name
    log.info("SQL %s by=%s thread=%s", verb, by, thread, extra={"sql": sql})
    log.debug("%s", sql)
    return execute(sql, params, many, context)


def _wrap(sender, connection, **kwargs) -> None:
    if _log_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_log_statement)


def install_query_logger() -> None:
    """Log the statements of every database connection opened from now on."""
    connection_created.connect(_wrap, dispatch_uid="xmpp.query_log")
