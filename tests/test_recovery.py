"""The re-dispatch budget of worker/recovery.py (the room behaviour is tests/room/test_room_faults.py)."""

from __future__ import annotations

from gocare_voice.worker.recovery import RedispatchBudget


def test_each_room_gets_its_own_limit_per_window() -> None:
    budget = RedispatchBudget(limit=2, window=3600)
    assert budget.take("a", 0) and budget.take("a", 10)
    assert not budget.take("a", 20)  # the third death within the hour: the user is told instead
    assert budget.take("b", 20)  # another room is not charged for room a
    assert budget.take("a", 3600.5)  # an hour after the first, one is free again
    assert not budget.take("a", 3601)


def test_a_limit_of_zero_never_allows_one() -> None:
    assert not RedispatchBudget(limit=0).take("a", 0)
