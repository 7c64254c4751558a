"""`python manage.py register`: create XMPP accounts, one or a file of them.

Like `prosodyctl register`, without prompts, for scripts: exit status 0 on
success, 1 when the name is invalid or the account exists, 2 on misuse.
Account rules (name preparation, all-or-nothing files) are in xmpp.accounts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from xmpp.accounts import (
    AccountExists,
    AccountListRejected,
    InvalidJID,
    InvalidPassword,
    create_account,
    create_accounts,
)

# A file with many bad lines is listed up to this many, then summarised.
MAX_REPORTED_LINES = 20


class Command(BaseCommand):
    help = (
        "Create the XMPP account USER@XMPP_DOMAIN with PASSWORD, or, with --from-file, "
        "one account for each 'USER PASSWORD' line of FILE (the password is the rest of "
        "the line; blank lines and lines starting with # are ignored; - reads standard "
        "input). Names are prepared as JID localparts (RFC 7622), so 'Juliet' becomes "
        "'juliet'. A file is all or nothing: if any line has a bad name or password, "
        "repeats a name or names an existing account, no account is created and every "
        "such line is reported. Exit status 1 when an account cannot be created. "
        "Note that a PASSWORD argument is visible to other local users in the process "
        "list; prefer --from-file - for real passwords."
    )
    # Account management needs the database, not the project's system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", nargs="?", metavar="USER", help="the account name")
        parser.add_argument("password", nargs="?", metavar="PASSWORD", help="its password")
        parser.add_argument(
            "--from-file",
            metavar="FILE",
            help="create the accounts listed in FILE, one 'USER PASSWORD' per line",
        )

    def handle(self, *args, **options) -> None:
        username, password, path = options["username"], options["password"], options["from_file"]
        if path is not None:
            if username is not None:
                raise CommandError("give either USER PASSWORD or --from-file FILE", returncode=2)
            self.register_from_file(path, options["verbosity"])
        elif username is None or password is None:
            raise CommandError("give USER and PASSWORD, or --from-file FILE", returncode=2)
        else:
            self.register_one(username, password, options["verbosity"])

    def register_one(self, username: str, password: str, verbosity: int) -> None:
        try:
            user = create_account(username, password)
        except InvalidJID as exc:
            raise CommandError(f"invalid account name {username!r}: {exc}", returncode=1) from None
        except InvalidPassword as exc:
            raise CommandError(f"invalid password for {username!r}: {exc}", returncode=1) from None
        except AccountExists as exc:
            raise CommandError(
                f"account {exc.username}@{settings.XMPP_DOMAIN} already exists", returncode=1
            ) from None
        if verbosity:
            self.stdout.write(f"Created account {user.username}@{settings.XMPP_DOMAIN}")

    def register_from_file(self, path: str, verbosity: int) -> None:
        try:
            if path == "-":
                lines = sys.stdin.read().splitlines()
            else:
                with open(path, encoding="utf-8") as file:
                    lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}", returncode=1) from None
        line_numbers, pairs = parse_account_lines(lines)
        try:
            count = create_accounts(pairs)
        except AccountListRejected as exc:
            report = []
            for problem in exc.problems[:MAX_REPORTED_LINES]:
                reason = problem.reason
                if problem.duplicate_of is not None:
                    reason += f" (first on line {line_numbers[problem.duplicate_of]})"
                report.append(f"  line {line_numbers[problem.index]}: {reason}")
            if len(exc.problems) > MAX_REPORTED_LINES:
                report.append(f"  ... and {len(exc.problems) - MAX_REPORTED_LINES} more")
            raise CommandError(
                f"{path}: {len(exc.problems)} bad line(s), no account created:\n"
                + "\n".join(report),
                returncode=1,
            ) from None
        if verbosity:
            self.stdout.write(f"Created {count} accounts on {settings.XMPP_DOMAIN} from {path}")


def parse_account_lines(lines: Iterable[str]) -> tuple[list[int], list[tuple[str, str]]]:
    """(line number of each entry, (user, password) entries) of an account file.

    A line with a name and no password gives an empty password, which
    create_accounts reports against that line.
    """
    line_numbers: list[int] = []
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # The name ends at the first run of whitespace; the password is the rest.
        username, *rest = text.split(maxsplit=1)
        line_numbers.append(number)
        pairs.append((username, rest[0] if rest else ""))
    return line_numbers, pairs
