"""`python manage.py unregister USER`: delete an XMPP account (like prosodyctl deluser)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from xmpp.accounts import AccountNotFound, InvalidJID, delete_account, prepare_username


class Command(BaseCommand):
    help = (
        "Delete the XMPP account USER@XMPP_DOMAIN and everything stored for it, without "
        "asking. The name is prepared as a JID localpart (RFC 7622), so 'Juliet' means "
        "'juliet'. Exit status 1 when the name is invalid or there is no such account."
    )
    # Account management needs the database, not the project's system checks.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USER", help="the account name")

    def handle(self, *args, **options) -> None:
        username = options["username"]
        try:
            name = prepare_username(username)
            delete_account(name)
        except InvalidJID as exc:
            raise CommandError(f"invalid account name {username!r}: {exc}", returncode=1) from None
        except AccountNotFound:
            raise CommandError(f"no account {name}@{settings.XMPP_DOMAIN}", returncode=1) from None
        if options["verbosity"]:
            self.stdout.write(f"Deleted account {name}@{settings.XMPP_DOMAIN}")
