"""Behaviour of the default volume detector, alone and paged the daemon's way."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from crisiswatch.detect.series import score_series
from crisiswatch.detect.volume import SENSITIVITY, VolumeDetector, nb_quantile, nb_surprise

START = datetime(2015, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=5)
THRESHOLD = SENSITIVITY["balanced"]


def daily_counts(days: float, mean: float, seed: int = 1) -> list[float]:
    """Poisson-ish counts with a daily rhythm."""
    rng = random.Random(seed)
    out = []
    for i in range(int(days * 288)):
        rate = mean * (1.0 + 0.6 * math.sin(2 * math.pi * i / 288))
        out.append(float(sum(1 for _ in range(int(rate * 4)) if rng.random() < 0.25)))
    return out


def run(counts: list[float], detector: VolumeDetector | None = None) -> list[float]:
    det = detector or VolumeDetector()
    scores = []
    for i, c in enumerate(counts):
        at = START + i * STEP
        scores.append(det.score_one(c, at).score)
        det.learn_one(c, at)
    return scores


def pages(counts: list[float]) -> list[int]:
    """The buckets where the daemon's default volume rule would open a page."""
    stamps = [START + i * STEP for i in range(len(counts))]
    return [i for i, (_, opened) in enumerate(score_series(stamps, counts)) if opened]


class TestVolumeDetector:
    def test_causal(self) -> None:
        """Appending future buckets does not change the scores of past ones."""
        counts = daily_counts(3, 20.0)
        assert run(counts[:500]) == run(counts)[:500]

    def test_score_one_does_not_learn(self) -> None:
        """score_one leaves the state as it was."""
        det = VolumeDetector()
        run(daily_counts(1.5, 20.0), det)
        before = pickle.dumps(det)
        det.score_one(500.0, START)
        assert pickle.dumps(det) == before

    def test_pickle_round_trip(self) -> None:
        """A restored detector scores the following buckets exactly as the original, also when
        it is saved in the middle of a surge that waits for confirmation."""
        counts = daily_counts(3, 10.0)
        counts[398:403] = [200.0, 10.0, 150.0, 160.0, 140.0]
        det = VolumeDetector()
        run(counts[:400], det)
        copy = pickle.loads(pickle.dumps(det))
        tail = counts[400:]
        assert run(tail, det) == run(tail, copy)

    def test_a_false_alarm_never_expects_more_than_the_accepted_count(self) -> None:
        """Accepting a bucket moves its slot's expectation towards its count and never past it,
        however often (the baseline's parts had each moved towards it and their product
        overshot: accepted twenty times, a bucket of 12 came to expect 51); a real surge at
        that time still scores high the next day."""
        det = VolumeDetector()
        counts = daily_counts(2, 10.0)
        run(counts, det)
        at = START + len(counts) * STEP
        before = det.score_one(30.0, at).expected
        det.accept_one(30.0, at)
        once = det.score_one(30.0, at).expected
        assert before < once < 30.0
        for _ in range(50):
            det.accept_one(30.0, at)
        assert once < det.score_one(30.0, at).expected <= 30.0
        assert det.score_one(30.0, at + timedelta(hours=12)).expected < once  # that slot only
        assert det.score_one(150.0, at + timedelta(days=1)).score > THRESHOLD

    def test_a_false_alarm_on_a_series_gone_quiet_raises_its_expectation(self) -> None:
        """A sparse series that has gone quiet (its busyness near nothing): an accepted
        bucket still moves the expectation towards its count, and never past it (the profile
        alone could not move it: the step had changed nothing)."""
        det = VolumeDetector(bucket_seconds=3600)
        for i, count in enumerate([1.0, 0.0] * 12 + [0.0] * 30):
            det.learn_one(count, START + timedelta(hours=i))
        at = START + timedelta(hours=54)
        before = det.score_one(40.0, at).expected
        expected = []
        for _ in range(5):
            det.accept_one(40.0, at)
            expected.append(det.score_one(40.0, at).expected)
        assert before < expected[0] < expected[-1] <= 40.0

    def test_a_false_alarm_at_night_on_a_quiet_series_does_not_scale_its_days(self) -> None:
        """A series gone quiet, a bucket accepted in a slot that is usually empty: the series
        comes back to its usual busyness at most (busyness had been set to the count itself,
        and its days came to expect 50 where they used to see 20)."""
        det = VolumeDetector(bucket_seconds=3600)
        hours = [0.0 if hour < 6 else 20.0 for hour in range(24)]
        for i, count in enumerate(hours * 14 + [h * 0.1 for h in hours] * 3):
            det.learn_one(count, START + timedelta(hours=i))
        day, night = START + timedelta(days=17, hours=14), START + timedelta(days=17, hours=3)
        before = det.score_one(30.0, night).expected
        det.accept_one(30.0, night)
        assert before < det.score_one(30.0, night).expected <= 30.0
        assert det.score_one(20.0, day).expected <= 21.0

    def test_scores_in_unit_interval(self) -> None:
        """Scores stay in [0, 1], also for enormous counts and zeros."""
        counts = [*daily_counts(2, 5.0), 1e9, 0.0, 0.0, 1e6]
        assert all(0.0 <= s <= 1.0 for s in run(counts))

    def test_sparse_blip_does_not_page(self) -> None:
        """On a mostly-zero series a 0 -> 3 blip is not a page."""
        rng = random.Random(7)
        counts = [float(rng.random() < 0.3) for _ in range(288 * 3)]
        counts[700] = 3.0
        assert pages(counts) == []

    def test_long_surge_pages_once(self) -> None:
        """A six-hour surge at five times the usual volume opens exactly one page."""
        counts = daily_counts(4, 20.0)
        surge = range(288 * 3, 288 * 3 + 72)
        for i in surge:
            counts[i] *= 5
        opened = pages(counts)
        assert len(opened) == 1
        assert opened[0] in surge

    def test_spike_does_not_become_baseline(self) -> None:
        """During a surge the expected count stays near the usual level."""
        counts = daily_counts(4, 20.0)
        det = VolumeDetector()
        run(counts[: 288 * 3], det)
        usual = det.score_one(20.0, START + 288 * 3 * STEP).expected
        at = START
        for i in range(36):
            at = START + (288 * 3 + i) * STEP
            det.learn_one(200.0, at)
        during = det.score_one(200.0, at + STEP)
        assert during.expected < 2.0 * usual
        assert during.score >= SENSITIVITY["high"]

    def test_level_shift_is_absorbed(self) -> None:
        """A lasting doubling of volume stops scoring as anomalous after a few days."""
        counts = daily_counts(3, 20.0) + [2 * c for c in daily_counts(5, 20.0, seed=2)]
        scores = run(counts)
        assert max(scores[-288:]) < THRESHOLD

    def test_no_page_during_warmup(self) -> None:
        """The first buckets score 0 whatever their counts; scores are useful after hours."""
        scores = run([5.0] * 10 + [500.0] * 30 + [5.0] * 10)
        assert scores[:36] == [0.0] * 36
        counts = [10.0] * 60 + [150.0, 40.0]
        assert run(counts)[-1] >= THRESHOLD

    def test_gradual_surge_pages(self) -> None:
        """Three hours at twice the usual volume, no single bucket extreme, opens a page."""
        counts = daily_counts(4, 20.0)
        surge = range(288 * 3, 288 * 3 + 36)
        for i in surge:
            counts[i] *= 2
        opened = pages(counts)
        assert len(opened) == 1
        assert opened[0] in surge

    def test_slow_surge_with_no_elevated_bucket_pages(self) -> None:
        """Three hours at one and a half times the usual volume: no bucket is above its usual
        range on its own, but the two-hour total is, bucket after bucket. That confirms the
        surge, and it pages."""
        counts = daily_counts(10, 10.0)
        surge = range(288 * 9, 288 * 9 + 36)
        for i in surge:
            counts[i] = 15.0
        opened = pages(counts)
        assert len(opened) == 1
        assert opened[0] in surge

    def test_one_bucket_burst_does_not_page(self) -> None:
        """A single five-minute burst that is over by the next buckets is not a page."""
        counts = daily_counts(4, 20.0)
        counts[288 * 3] = 400.0
        assert pages(counts) == []

    def test_burst_confirmed_within_half_an_hour_pages(self) -> None:
        """The same burst pages once another bucket within half an hour is above its usual range;
        the page carries the burst's score, not the milder confirming bucket's."""
        counts = daily_counts(4, 20.0)
        start = 288 * 3
        counts[start] = 400.0
        counts[start + 4] = 60.0
        assert pages(counts) == [start + 4]
        scores = run(counts)
        assert scores[start] < THRESHOLD <= scores[start + 4]
        counts[start] = 60.0
        assert run(counts)[start + 4] < scores[start + 4]

    def test_confirmation_expires(self) -> None:
        """An elevated bucket more than half an hour after a burst does not confirm it."""
        counts = daily_counts(4, 20.0)
        start = 288 * 3
        counts[start] = 400.0
        counts[start + 7] = 60.0
        assert pages(counts) == []


def test_band_edge_inverts_the_surprise() -> None:
    """The band's upper edge is the count whose surprise is the one asked, for quiet and busy
    series, tight and over-dispersed; a surprise under one half never breaks the solve."""
    for mu in (0.2, 3.0, 40.0, 900.0, 20_000.0):
        for alpha in (0.005, 0.1, 0.8, 5.0):
            for surprise in (1.0, 2.0, 3.5, 6.0):
                edge = nb_quantile(surprise, mu, alpha)
                assert edge > mu
                assert nb_surprise(edge, mu, alpha) == pytest.approx(surprise, rel=1e-6)
            assert nb_quantile(0.1, mu, alpha) >= mu
