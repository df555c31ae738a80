"""Closed buckets → signals: each series' own online detectors score, then learn.

Every series (brand × topic × view) has a volume detector, a negative-share detector, a usual
count per watched term set (for keyword bursts) and a bounded memory of the terms it has had (for
emerging terms). Scoring comes before learning (river's order), so a bucket is judged against
what was known before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

from crisiswatch.detect.negative import NegativeShareDetector, score_shares
from crisiswatch.detect.volume import VolumeDetector
from crisiswatch.domain import Bucket, SeriesKey, Signal

BURST_HALF_LIFE = 288.0  # buckets (a day of 5-minute buckets) for a term set's usual count
KNOWN_TERMS = 20_000  # terms remembered per series, least recently seen forgotten first
_KNOWN_SLACK = KNOWN_TERMS // 4  # forgotten in one sweep once this many more have been seen
TERMS_WARMUP = 288  # buckets before any term counts as new (a day of 5-minute buckets)
MIN_NEW_TERM = 2  # a term must appear in this many mentions of a bucket to be news


@dataclass(slots=True)
class _SeriesDetectors:
    volume: VolumeDetector
    negative: NegativeShareDetector = field(default_factory=NegativeShareDetector)
    previous_count: int = 0
    buckets: int = 0
    burst_usual: dict[str, float] = field(default_factory=dict)
    known_terms: dict[str, int] = field(default_factory=dict)  # term -> bucket last seen in

    def new_terms(self, bucket: Bucket) -> tuple[tuple[str, int], ...]:
        if self.buckets < TERMS_WARMUP:
            return ()
        known = self.known_terms
        return tuple((t, n) for t, n in bucket.top_terms if n >= MIN_NEW_TERM and t not in known)

    def learn(self, bucket: Bucket, decay: float) -> None:
        self.previous_count = bucket.count
        self.buckets += 1
        if bucket.bursts or self.burst_usual:
            counts = dict(bucket.bursts)
            for term_set in counts.keys() | self.burst_usual.keys():
                usual = self.burst_usual.get(term_set, 0.0)
                seen = min(counts.get(term_set, 0), 3.0 * usual + 1.0)  # a burst is damped
                self.burst_usual[term_set] = usual * decay + seen * (1.0 - decay)
        known = self.known_terms
        known.update(zip(map(itemgetter(0), bucket.top_terms), repeat(self.buckets)))
        if len(known) > KNOWN_TERMS + _KNOWN_SLACK:  # forget the least recently seen, in bulk
            cut = sorted(known.values())[len(known) - KNOWN_TERMS]
            self.known_terms = {term: seen for term, seen in known.items() if seen >= cut}


class SignalDetector:
    """Holds the learned state of every series; its state pickles whole for checkpoints."""

    def __init__(self, bucket_seconds: int) -> None:
        self.bucket_seconds = bucket_seconds
        self._series: dict[SeriesKey, _SeriesDetectors] = {}
        self._decay = 0.5 ** (1.0 / BURST_HALF_LIFE)

    def accept(self, bucket: Bucket) -> None:
        """Feedback: this bucket's volume was no alarm (a False alarm on its page)."""
        detectors = self._series.get(bucket.series)
        if detectors is not None:
            detectors.volume.accept_one(bucket.count, bucket.start)

    def prepare(self, series: Iterable[SeriesKey]) -> None:
        """Set up the detectors of series not seen yet, so their memory is taken now (at start
        or a reload), not when their first bucket closes."""
        for key in series:
            self._detectors(key)

    def _detectors(self, key: SeriesKey) -> _SeriesDetectors:
        detectors = self._series.get(key)
        if detectors is None:
            detectors = _SeriesDetectors(VolumeDetector(bucket_seconds=self.bucket_seconds))
            self._series[key] = detectors
        return detectors

    def signal(self, bucket: Bucket) -> Signal:
        """Score a closed bucket against its series' history, then learn from it."""
        return self.signals([bucket])[0]

    def signals(self, buckets: Sequence[Bucket]) -> list[Signal]:
        """`signal` for each bucket, in order; the negative-share tails of all of them are
        computed together (a bucket end's 1,200 series in one numpy pass, not 1,200)."""
        series = [self._detectors(bucket.series) for bucket in buckets]
        negatives = score_shares(
            [(d.negative, b.negative_count, b.count) for d, b in zip(series, buckets, strict=True)]
        )
        signals = []
        for detectors, bucket, negative in zip(series, buckets, negatives, strict=True):
            volume = detectors.volume.score_and_learn(bucket.count, bucket.start)
            detectors.negative.learn_scored(bucket.negative_count, bucket.count, negative.score)
            signals.append(
                Signal(
                    bucket=bucket,
                    volume_score=volume.score,
                    volume_expected=volume.expected,
                    volume_upper=volume.upper,
                    negative_score=negative.score,
                    negative_expected=negative.expected,
                    previous_count=detectors.previous_count,
                    burst_usual=tuple(sorted(detectors.burst_usual.items())),
                    new_terms=detectors.new_terms(bucket),
                )
            )
            detectors.learn(bucket, self._decay)
        return signals
