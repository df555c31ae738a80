"""The dedupe window: the most recent `capacity` ids, oldest forgotten first."""

from __future__ import annotations

import random
from collections import deque

import pytest

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


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 64, 1_000])
def test_agrees_with_a_plain_window_on_a_stream_of_repeats(capacity: int) -> None:
    """On a long random stream that keeps coming back to the same ids, the hash table (with its
    deletions shifting entries back) answers exactly as a plain list of the newest ids would."""
    rng = random.Random(capacity)
    deduper, window = Deduper(capacity), deque[str](maxlen=capacity)
    for _ in range(20_000):
        mention_id = f"x:{rng.randrange(capacity * 3)}"
        new = mention_id not in window
        assert deduper.first_time(mention_id) == new, mention_id
        if new:
            window.append(mention_id)
