"""The failed-login table (xmpp/failed_logins.py) without a server: its
delays per (address, account) and per account, and its bounded memory."""

from __future__ import annotations

from xmpp.failed_logins import FailedLogins


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_double_per_address_and_account_up_to_the_maximum():
    table = FailedLogins(clock=Clock())
    delays = [table.failed("192.0.2.1", "alice", 1.0, 30.0) for _ in range(8)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_another_account_from_the_same_address_is_not_slowed():
    table = FailedLogins(clock=Clock())
    for _ in range(5):
        table.failed("192.0.2.1", "alice", 1.0, 30.0)
    assert table.failed("192.0.2.1", "bob", 1.0, 30.0) == 0.0


def test_an_account_is_slowed_after_ten_failures_from_anywhere():
    table = FailedLogins(clock=Clock())
    delays = [table.failed(f"192.0.2.{i}", "alice", 1.0, 30.0) for i in range(13)]
    assert delays == [0.0] * 10 + [1.0, 2.0, 4.0]


def test_a_correct_login_forgives_the_address_but_not_the_account():
    table = FailedLogins(clock=Clock())
    for i in range(12):
        table.failed("192.0.2.1" if i < 3 else f"198.51.100.{i}", "alice", 1.0, 30.0)
    table.succeeded("192.0.2.1", "alice")
    # The pair starts again, the account's 13th failure still waits.
    assert table.failed("192.0.2.1", "alice", 1.0, 30.0) == 4.0
    assert table.failed("192.0.2.1", "bob", 1.0, 30.0) == 0.0


def test_entries_expire_after_the_window():
    clock = Clock()
    table = FailedLogins(window=300.0, clock=clock)
    for _ in range(4):
        table.failed("192.0.2.1", "alice", 1.0, 30.0)
    clock.now += 301
    assert table.failed("192.0.2.2", "carol", 1.0, 30.0) == 0.0
    assert len(table) == 2  # only carol's pair and account are left
    assert table.failed("192.0.2.1", "alice", 1.0, 30.0) == 0.0


def test_the_table_never_holds_more_than_its_maximum():
    table = FailedLogins(max_entries=1000, clock=Clock())
    for i in range(5000):
        table.failed("192.0.2.1", f"name-{i}" * 100, 1.0, 30.0)
    assert len(table) == 1000
