"""Optional logging of every SQL statement the server runs (XMPP_LOG_SQL=true).

For operators chasing load, and for the tests that prove the routing path
never touches the database: each statement is logged on "xmpp.sql", from
whichever thread (the ORM's async calls run in a worker thread) made it.
"""

from __future__ import annotations

import logging

from django.db.backends.signals import connection_created

log = logging.getLogger("xmpp.sql")


def _log_statement(execute, sql, params, many, context):
    log.info("SQL %s", sql.split(None, 1)[0] if sql else "?", extra={"sql": sql})
    log.debug("%s", sql)
    return execute(sql, params, many, context)


def _wrap(sender, connection, **kwargs) -> None:
    if _log_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(_log_statement)


def install_query_logger() -> None:
    """Log the statements of every database connection opened from now on."""
    connection_created.connect(_wrap, dispatch_uid="xmpp.query_log")
