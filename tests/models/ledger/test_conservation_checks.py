"""The record a passed conservation check leaves (`check_conservation`) and what the close
trusts of it (`unconfirmed_days`): a day is vouched for only while its ledger rows, its
collection gaps and the check itself are what was checked."""

from __future__ import annotations

from datetime import timedelta

from models.ledger import warehouse
from tests.models.ledger.test_gaps import DAY, PARTIAL, con, gap, ledger, load

__all__ = ["con"]  # the fixture, shared with test_gaps

WHOLE = [("n1", "n1/gpu0", 0, 40.0, "acme", "pods"),
         ("n1", "n1/gpu0", 0, 20.0, "__idle__", "pods")]


def unconfirmed(con) -> list:
    return warehouse.unconfirmed_days(con, DAY - timedelta(days=1), DAY + timedelta(days=1))


def test_a_day_never_checked_is_unconfirmed(con) -> None:
    ledger(con, WHOLE)
    assert unconfirmed(con) == [DAY]


def test_a_passed_day_is_confirmed_until_a_row_changes(con) -> None:
    ledger(con, WHOLE)
    assert warehouse.check_conservation(con, DAY) == []
    assert unconfirmed(con) == []

    con.execute("UPDATE ledger SET allocated_gpu_seconds = 41 WHERE tenant = 'acme'")

    assert unconfirmed(con) == [DAY]
    assert warehouse.check_conservation(con, DAY) != []
    assert unconfirmed(con) == [DAY]  # a failed check leaves no record


def test_a_row_added_or_moved_to_another_source_unconfirms_the_day(con) -> None:
    ledger(con, WHOLE)
    warehouse.check_conservation(con, DAY)
    ledger(con, [("n1", "n1/gpu0", 0, 0.0, "zen", "pods")])  # sums unchanged, one row more
    assert unconfirmed(con) == [DAY]

    con.execute("DELETE FROM ledger WHERE tenant = 'zen'")
    assert unconfirmed(con) == []  # the same rows as checked
    con.execute("UPDATE ledger SET source = 'nvml'")
    assert unconfirmed(con) == [DAY]


def test_a_gap_removed_after_the_check_unconfirms_the_day(con) -> None:
    """The gap excused n1/gpu1's missing idle rows; without it the day fails."""
    ledger(con, PARTIAL)
    load(con, gap("n1", "n1/gpu1", 0))
    assert warehouse.check_conservation(con, DAY) == []
    assert unconfirmed(con) == []

    load(con)

    assert unconfirmed(con) == [DAY]
    assert warehouse.check_conservation(con, DAY) != []


def test_a_record_of_another_rule_is_not_trusted(con) -> None:
    ledger(con, WHOLE)
    warehouse.check_conservation(con, DAY)
    con.execute("UPDATE conservation_checks SET rule = 'an older check'")
    assert unconfirmed(con) == [DAY]
