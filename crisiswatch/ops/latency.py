"""A latency histogram kept by the daemon at almost no cost and read by `/metrics` when scraped."""

from __future__ import annotations

from bisect import bisect_left

BOUNDS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""Upper bounds in seconds: a mention takes tens of microseconds, a closed bucket milliseconds."""


class Latency:
    """Counts of observations per bucket of `BOUNDS` (the last for anything slower)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: (upper bound, observations at or under it), `+Inf` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, BOUNDS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
