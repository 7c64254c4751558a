"""`python manage.py passwd USER PASSWORD`: set an XMPP account's password (prosodyctl passwd)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from xmpp.accounts import (
    AccountNotFound,
    InvalidJID,
    InvalidPassword,
    prepare_username,
    set_account_password,
)


class Command(BaseCommand):
    help = (
        "Set the password of the existing XMPP account USER@XMPP_DOMAIN to PASSWORD, "
        "without prompting; the old password stops working at once for new logins. "
        "Exit status 1 when the name or password is invalid or there is no such account. "
        "Note that a PASSWORD argument is visible to other local users in the process list."
    )
    # Account management needs the database, not the project's system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USER", help="the account name")
        parser.add_argument("password", metavar="PASSWORD", help="the new password")

    def handle(self, *args, **options) -> None:
        username = options["username"]
        try:
            name = prepare_username(username)
            set_account_password(name, options["password"])
        except InvalidJID as exc:
            raise CommandError(f"invalid account name {username!r}: {exc}", returncode=1) from None
        except InvalidPassword as exc:
            raise CommandError(f"invalid password for {name!r}: {exc}", returncode=1) from None
        except AccountNotFound:
            raise CommandError(f"no account {name}@{settings.XMPP_DOMAIN}", returncode=1) from None
        if options["verbosity"]:
            self.stdout.write(f"Changed the password of {name}@{settings.XMPP_DOMAIN}")
