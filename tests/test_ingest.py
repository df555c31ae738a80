"""The dedupe window: the most recent `capacity` ids, oldest forgotten first."""

from __future__ import annotations

from crisiswatch.ingest import Deduper


def test_an_id_within_the_window_is_a_duplicate() -> None:
    """Seen ids are duplicates until `capacity` newer ids have pushed them out."""
    deduper = Deduper(3)
    assert [deduper.first_time(i) for i in ("a", "b", "c", "a", "b")] == [True] * 3 + [False] * 2
    assert deduper.first_time("d")  # pushes out "a", the oldest
    assert deduper.first_time("a")  # so "a" is new again, and pushes out "b"
    assert not deduper.first_time("c") and not deduper.first_time("d")
    assert deduper.first_time("b")


def test_restored_ids_keep_only_the_newest() -> None:
    """Ids given at start (oldest first) fill the window as if they had just been seen."""
    deduper = Deduper(2, ["x", "y", "z"])
    assert deduper.first_time("x") and not deduper.first_time("z")
