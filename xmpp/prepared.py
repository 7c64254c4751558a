"""Reads that run at every login, their SQL written once by the ORM.

A login reads the account's SCRAM keys, then at bind its roster, shared
groups, block list and photo hash (the account loaders). Each is a look-up
by one key, and SQLite answers it in about 10 us, but building the
QuerySet and compiling it to SQL again for every call costs the ORM
150-300 us of CPU, which made these reads the larger part of what a login
cost the server (issue 13). A PreparedQuery keeps what does not change from
one call to the next: the SQL text and the converters of its columns
(booleans, JSON, datetimes, as the ORM's own iteration applies them); a
call is one cursor.execute with new parameters.

Rules, checked when the query is compiled:

- `build(*args)` returns a QuerySet whose SQL does not depend on the values
  of its arguments, and whose parameters are exactly the arguments, in
  order (a filter on `field=arg` each). None is never an argument: the ORM
  writes `IS NULL` for it, which is another statement.
- The query reads (values() or values_list()); rows come back as tuples.

The compiled form is kept per database connection (per thread, as Django's
connections are), so each backend and connection gets its own SQL and
converters. Statements run through Django's cursor wrapper, so
XMPP_LOG_SQL and the routing tests see them like any other.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from django.db import connections, router
from django.db.models import QuerySet


class PreparedQuery:
    """A read compiled once per connection; `rows(*args)` runs it."""

    def __init__(self, build: Callable[..., QuerySet]) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._alias: str | None = None

    def rows(self, *args) -> list[tuple]:
        """The rows for these arguments (sync ORM: run it in a worker thread)."""
        if any(arg is None for arg in args):
            raise ValueError("a PreparedQuery takes no None argument (it would mean IS NULL)")
        if self._alias is None:
            self._alias = router.db_for_read(self._build(*args).model)
        connection = connections[self._alias]
        compiled = self._compiled.get(connection)
        if compiled is None:
            compiled = self._compiled[connection] = self._compile(args, connection)
        sql, converters = compiled
        with connection.cursor() as cursor:
            cursor.execute(sql, args)
            rows = cursor.fetchall()
        if not converters:
            return rows
        converted = []
        for row in rows:
            row = list(row)
            for position, functions, expression in converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, connection)
                row[position] = value
            converted.append(tuple(row))
        return converted

    def _compile(self, args: tuple, connection) -> tuple[str, list]:
        compiler = self._build(*args).query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        if tuple(params) != args:
            raise ValueError(
                f"the query's parameters {params!r} are not its arguments {args!r}: "
                "it cannot be prepared"
            )
        # as_sql() has set up the selected columns; these are the converters
        # the ORM's own results_iter() would apply to them.
        columns = [selected[0] for selected in compiler.select[: compiler.col_count]]
        converters = [
            (position, functions, expression)
            for position, (functions, expression) in compiler.get_converters(columns).items()
        ]
        return sql, converters
