"""Build the rosters of the presence bench directly in the database.

    python bench/rosters.py --prefix pres --users 1000 --contacts 50 --domain localhost

Run with the server's environment (DJANGO_SETTINGS_MODULE, XMPP_DATA_DIR or
DATABASE_URL), after `manage.py migrate` and `manage.py register`, before
the server starts. Accounts are <prefix><i:05d>, i = 0 .. users-1, already
registered. Each account i gets as contacts its `contacts` neighbours on a
ring, i±1 .. i±contacts/2 (mod users), so the relation is symmetric and
every pair has a row in each direction, as two completed subscriptions
(RFC 6121 §3.1) would leave them: subscription 'both', listed, no pending
state, version 1. Going through the protocol instead (subscribe/subscribed
both ways) would take 2 x 25,000 round trips before a 10-second bench.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ring_neighbours(index: int, users: int, contacts: int) -> list[int]:
    half = contacts // 2
    return [(index + step) % users for step in range(1, half + 1)] + [
        (index - step) % users for step in range(1, half + 1)
    ]


def build(prefix: str, users: int, contacts: int, domain: str) -> int:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from xmpp.models import RosterItem

    names = [f"{prefix}{i:05d}" for i in range(users)]
    ids = dict(get_user_model().objects.filter(username__in=names).values_list("username", "id"))
    missing = [name for name in names if name not in ids]
    if missing:
        raise SystemExit(f"{len(missing)} accounts are not registered, e.g. {missing[0]}")
    rows = [
        RosterItem(
            user_id=ids[names[i]],
            jid=f"{names[j]}@{domain}",
            subscription=RosterItem.Subscription.BOTH,
            listed=True,
            version=1,
        )
        for i in range(users)
        for j in ring_neighbours(i, users, contacts)
    ]
    with transaction.atomic():
        RosterItem.objects.filter(user_id__in=ids.values()).delete()
        RosterItem.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--contacts", type=int, default=50)
    parser.add_argument("--domain", default="localhost")
    args = parser.parse_args(argv)
    if args.contacts % 2 or args.contacts <= 0:
        parser.error("--contacts must be a positive even number (neighbours on both sides)")
    if args.users <= args.contacts:
        parser.error("--users must be greater than --contacts")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imserver.settings")
    import django

    django.setup()
    t0 = time.monotonic()
    count = build(args.prefix, args.users, args.contacts, args.domain)
    print(f"{count} roster items for {args.users} accounts in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
