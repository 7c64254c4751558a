"""XMPP accounts: creating, deleting and re-keying the users that log in.

A Django user is an XMPP account; its username is the JID localpart after
RFC 7622 §3.3 preparation (PRECIS UsernameCaseMapped, xmpp.protocol.jid), so
"Juliet" and "juliet" are one account. Passwords are prepared with the PRECIS
OpaqueString profile (RFC 8265 §4.2), as the SASL side does, and stored with
make_password, whose first hasher keeps SCRAM credentials (xmpp/passwords.py).

Bulk creation (create_accounts) is all or nothing: every entry is checked
before anything is written, the passwords are hashed in worker processes (a
hash is two PBKDF2 runs, so one core does only a few hundred a second), and
the rows go in with bulk_create inside one transaction. bulk_create sends no
post_save signals, so nothing may rely on them to set up a new account.

The management commands register, unregister and passwd are thin wrappers
over this module.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import precis_i18n
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction

from xmpp.protocol.jid import InvalidJID, nodeprep

if TYPE_CHECKING:
    # Not at run time: hashing workers import this module before Django is set up.
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = [
    "AccountExists",
    "AccountListRejected",
    "AccountNotFound",
    "AccountProblem",
    "InvalidJID",
    "InvalidPassword",
    "create_account",
    "create_accounts",
    "delete_account",
    "prepare_password",
    "prepare_username",
    "set_account_password",
]

# The same profile the SASL side prepares passwords with (xmpp.protocol.scram).
_OPAQUE_STRING = precis_i18n.get_profile("OpaqueString")
# Passwords per worker process below which starting it (importing and setting
# up Django, about half a second) costs more than the hashing it takes over.
MIN_PASSWORDS_PER_WORKER = 500
MAX_CHUNK = 500
BULK_BATCH_SIZE = 1000
# Names per `username IN (...)` query; old SQLite builds allow 999 variables.
LOOKUP_CHUNK = 900


class AccountExists(Exception):
    """An account with this (prepared) name already exists."""

    def __init__(self, username: str) -> None:
        super().__init__(f"account {username!r} already exists")
        self.username = username


class AccountNotFound(Exception):
    """No account has this (prepared) name."""

    def __init__(self, username: str) -> None:
        super().__init__(f"no account {username!r}")
        self.username = username


class InvalidPassword(ValueError):
    """The password is empty or the OpaqueString profile rejects it."""


@dataclass(frozen=True)
class AccountProblem:
    """Why entry `index` (0-based) of a create_accounts list was refused.

    duplicate_of is the index of the earlier entry with the same prepared
    name, when that is the problem.
    """

    index: int
    username: str
    reason: str
    duplicate_of: int | None = None


class AccountListRejected(ValueError):
    """create_accounts wrote nothing; `problems` lists every refused entry."""

    def __init__(self, problems: list[AccountProblem]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"entry {first.index + 1}: {first.reason}{more}")
        self.problems = problems


def prepare_username(username: str) -> str:
    """The account name for `username` (RFC 7622 §3.3), or raise InvalidJID."""
    name = nodeprep(username)
    # A valid localpart may be up to 1023 octets, but it must fit the column.
    max_length = get_user_model()._meta.get_field("username").max_length
    if max_length and len(name) > max_length:
        raise InvalidJID(f"account name longer than {max_length} characters")
    return name


def prepare_password(password: str) -> str:
    """The password as RFC 8265 §4.2 OpaqueString prepares it, or raise InvalidPassword."""
    if not password:
        raise InvalidPassword("empty password")
    try:
        return _OPAQUE_STRING.enforce(password)
    except UnicodeError as exc:
        raise InvalidPassword(f"password not allowed by the OpaqueString profile: {exc}") from None


def create_account(username: str, password: str) -> AbstractBaseUser:
    """Create the account `username` with `password` and return its user.

    Raises InvalidJID, InvalidPassword or AccountExists.
    """
    User = get_user_model()
    name = prepare_username(username)
    prepared = prepare_password(password)
    if User._default_manager.filter(username=name).exists():
        raise AccountExists(name)
    user = User(username=name, password=make_password(prepared))
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:  # created by someone else since the check above
        raise AccountExists(name) from None
    return user


def delete_account(username: str) -> None:
    """Delete the account `username` and everything that belongs to it.

    Raises InvalidJID or AccountNotFound.
    """
    _get_account(username).delete()


def set_account_password(username: str, password: str) -> None:
    """Give the account `username` a new password.

    Raises InvalidJID, InvalidPassword or AccountNotFound.
    """
    prepared = prepare_password(password)
    user = _get_account(username)
    user.set_password(prepared)
    user.save(update_fields=["password"])


def create_accounts(pairs: Iterable[tuple[str, str]]) -> int:
    """Create an account for each (username, password) and return how many.

    All or nothing: when any entry has an invalid name or password, repeats an
    earlier entry's name, or names an existing account, AccountListRejected
    lists every such entry and no account is created.
    """
    User = get_user_model()
    names: list[str] = []
    passwords: list[str] = []
    problems: list[AccountProblem] = []
    first_index: dict[str, int] = {}
    for index, (username, password) in enumerate(pairs):
        try:
            name = prepare_username(username)
            passwords.append(prepare_password(password))
        except (InvalidJID, InvalidPassword) as exc:
            problems.append(AccountProblem(index, username, str(exc)))
            continue
        names.append(name)
        if name in first_index:
            reason = f"account {name!r} is listed twice"
            problems.append(AccountProblem(index, username, reason, first_index[name]))
        else:
            first_index[name] = index
    problems += _existing_account_problems(first_index)
    if problems:
        raise AccountListRejected(sorted(problems, key=lambda p: p.index))
    if not names:
        return 0

    # Hash before the transaction: with SQLite it would hold the write lock.
    encoded = _hash_passwords(passwords)
    users = [User(username=n, password=e) for n, e in zip(names, encoded, strict=True)]
    try:
        with transaction.atomic():
            User._default_manager.bulk_create(users, batch_size=BULK_BATCH_SIZE)
    except IntegrityError:
        # Some were created by someone else while we were hashing.
        problems = _existing_account_problems(first_index)
        if not problems:
            raise
        raise AccountListRejected(problems) from None
    return len(users)


def _get_account(username: str) -> AbstractBaseUser:
    User = get_user_model()
    name = prepare_username(username)
    try:
        return User._default_manager.get(username=name)
    except User.DoesNotExist:
        raise AccountNotFound(name) from None


def _existing_account_problems(index_by_name: dict[str, int]) -> list[AccountProblem]:
    User = get_user_model()
    names = list(index_by_name)
    problems = []
    for start in range(0, len(names), LOOKUP_CHUNK):
        chunk = names[start : start + LOOKUP_CHUNK]
        existing = User._default_manager.filter(username__in=chunk).values_list(
            "username", flat=True
        )
        for name in existing:
            problems.append(
                AccountProblem(index_by_name[name], name, f"account {name!r} already exists")
            )
    return problems


def _hash_passwords(passwords: list[str]) -> list[str]:
    """make_password of each password, spread over the CPUs for long lists."""
    workers = min(_usable_cpus(), len(passwords) // MIN_PASSWORDS_PER_WORKER)
    if workers <= 1:
        return [make_password(p) for p in passwords]
    # Several chunks per worker so that one slow worker does not hold up the end.
    size = max(1, min(MAX_CHUNK, math.ceil(len(passwords) / (workers * 4))))
    chunks = [passwords[i : i + size] for i in range(0, len(passwords), size)]
    # "spawn", not fork: the caller may have threads (the server does), and a
    # forked copy of a threaded process can deadlock. Each worker sets Django
    # up afresh from the settings module, so it hashes with the same settings.
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_hashing_worker,
        initargs=(getattr(settings, "SETTINGS_MODULE", None),),
    ) as pool:
        return [encoded for chunk in pool.map(_hash_chunk, chunks) for encoded in chunk]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _start_hashing_worker(settings_module: str | None) -> None:
    if settings_module:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django

    django.setup()


def _hash_chunk(passwords: list[str]) -> list[str]:
    return [make_password(p) for p in passwords]
