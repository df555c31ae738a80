"""Closed buckets → signals: each series' own online detectors score, then learn.

Every series (brand × topic) has a volume detector and a negative-share detector. Scoring comes
before learning (river's order), so a bucket is judged against what was known before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crisiswatch.detect.negative import NegativeShareDetector
from crisiswatch.detect.volume import VolumeDetector
from crisiswatch.domain import Bucket, SeriesKey, Signal


@dataclass(slots=True)
class _SeriesDetectors:
    volume: VolumeDetector
    negative: NegativeShareDetector = field(default_factory=NegativeShareDetector)
    previous_count: int = 0


class SignalDetector:
    """Holds the learned state of every series; its state pickles whole for checkpoints."""

    def __init__(self, bucket_seconds: int) -> None:
        self.bucket_seconds = bucket_seconds
        self._series: dict[SeriesKey, _SeriesDetectors] = {}

    def signal(self, bucket: Bucket) -> Signal:
        """Score a closed bucket against its series' history, then learn from it."""
        detectors = self._series.get(bucket.series)
        if detectors is None:
            detectors = _SeriesDetectors(VolumeDetector(bucket_seconds=self.bucket_seconds))
            self._series[bucket.series] = detectors
        volume = detectors.volume.score_one(bucket.count, bucket.start)
        negative = detectors.negative.score_one(bucket.negative_count, bucket.count)
        signal = Signal(
            bucket=bucket,
            volume_score=volume.score,
            volume_expected=volume.expected,
            volume_upper=volume.upper,
            negative_score=negative.score,
            negative_expected=negative.expected,
            previous_count=detectors.previous_count,
        )
        detectors.volume.learn_one(bucket.count, bucket.start)
        detectors.negative.learn_one(bucket.negative_count, bucket.count)
        detectors.previous_count = bucket.count
        return signal
