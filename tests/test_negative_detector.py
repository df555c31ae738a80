"""The negative-share detector: a beta-binomial tail against the series' usual share."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
from scipy import stats  # type: ignore[import-untyped]

from crisiswatch.detect.negative import (
    CONCENTRATION,
    MAX_TRIALS,
    PRIOR_SHARE,
    NegativeShareDetector,
    beta_binomial_tail,
    beta_binomial_tails,
)

BUCKET = 30  # mentions per bucket in the scenarios below


def calm_buckets(share: float, buckets: int, seed: int = 7) -> list[int]:
    """Negative counts of `buckets` buckets of BUCKET mentions at a steady share."""
    rng = random.Random(seed)
    return [sum(rng.random() < share for _ in range(BUCKET)) for _ in range(buckets)]


def trained(share: float, buckets: int = 300) -> NegativeShareDetector:
    detector = NegativeShareDetector()
    for negative in calm_buckets(share, buckets):
        detector.learn_one(negative, BUCKET)
    return detector


class TestBetaBinomialTail:
    @pytest.mark.parametrize("n", [1, 3, 12, 30, 120])
    @pytest.mark.parametrize("mean", [0.02, 0.2, 0.5, 0.85])
    @pytest.mark.parametrize("concentration", [2.0, CONCENTRATION, 500.0])
    def test_matches_scipy(self, n: int, mean: float, concentration: float) -> None:
        """P(X ≥ k) equals scipy's betabinom survival function at k − 1, for every k."""
        a, b = mean * concentration, (1 - mean) * concentration
        ks = list(range(n + 2))
        expected = stats.betabinom.sf([k - 1 for k in ks], n, a, b).tolist()
        ours = [beta_binomial_tail(k, n, mean, concentration) for k in ks]
        assert ours == pytest.approx(expected, rel=1e-6, abs=1e-10)

    @pytest.mark.parametrize("concentration", [0.5, 2.0, CONCENTRATION, 500.0])
    def test_equals_the_whole_sum(self, concentration: float) -> None:
        """Summing the shorter side by ratios of terms agrees with summing every term from k,
        to 1e-10 relative, tiny upper tails (far past any threshold) included, in both
        directions."""
        rng = random.Random(5)
        for _ in range(400):
            n = rng.choice([rng.randint(1, 60), rng.randint(1, MAX_TRIALS)])
            k, mean = rng.randint(1, n), rng.choice([rng.random(), rng.random() * 0.03, 0.99])
            expected = _whole_sum(k, n, mean, concentration)
            assert beta_binomial_tail(k, n, mean, concentration) == pytest.approx(
                expected, rel=1e-10, abs=1e-300
            ), (k, n, mean)

    def test_a_batch_equals_each_case_alone(self) -> None:
        """Tails computed together (as a bucket end's series are: runs of every length, both
        directions, edges, scaled buckets, more than one numpy block) equal each computed on
        its own and the whole sum."""
        rng = random.Random(9)
        cases = []
        for _ in range(300):
            n = rng.choice([rng.randint(1, 60), rng.randint(1, 2000), rng.randint(2001, 9000)])
            k = rng.randint(-1, n + 1)
            cases.append((k, n, rng.choice([rng.random(), 0.01, 0.99]), rng.uniform(0.5, 500)))
        together = beta_binomial_tails(cases)
        alone = [beta_binomial_tails([case])[0] for case in cases]
        assert together == pytest.approx(alone, rel=1e-12, abs=1e-300)
        for (k, n, mean, concentration), tail in zip(cases, together, strict=True):
            if 0 < k <= n <= MAX_TRIALS:
                expected = _whole_sum(k, n, mean, concentration)
                assert tail == pytest.approx(expected, rel=1e-10, abs=1e-300), (k, n, mean)
        assert beta_binomial_tails([]) == []

    def test_edges(self) -> None:
        """At least zero is certain; more than n is impossible."""
        assert beta_binomial_tail(0, 10, 0.2, CONCENTRATION) == 1.0
        assert beta_binomial_tail(-3, 10, 0.2, CONCENTRATION) == 1.0
        assert beta_binomial_tail(11, 10, 0.2, CONCENTRATION) == 0.0

    def test_decreasing_in_k(self) -> None:
        """Seeing more negatives is ever less likely."""
        tails = [beta_binomial_tail(k, 50, 0.2, CONCENTRATION) for k in range(51)]
        assert all(a >= b for a, b in pairwise(tails))

    def test_extreme_means_are_clamped(self) -> None:
        """A mean of exactly 0 or 1 gives a finite probability, not a math error."""
        assert 0.0 <= beta_binomial_tail(1, 10, 0.0, CONCENTRATION) < 0.01
        assert beta_binomial_tail(10, 10, 1.0, CONCENTRATION) > 0.99

    def test_large_buckets_are_scaled(self) -> None:
        """A bucket over MAX_TRIALS is scored like the same share of MAX_TRIALS."""
        big = beta_binomial_tail(3_000, 10_000, 0.2, CONCENTRATION)
        scaled = beta_binomial_tail(MAX_TRIALS * 3 // 10, MAX_TRIALS, 0.2, CONCENTRATION)
        assert big == scaled
        assert 0.0 < big < 0.1


class TestNegativeShareDetector:
    def test_starts_at_the_prior(self) -> None:
        """A fresh detector expects the prior share."""
        assert NegativeShareDetector().usual_share == pytest.approx(PRIOR_SHARE)

    def test_constructor_arguments_kept(self) -> None:
        """Constructor arguments are stored under their own names (river's convention)."""
        detector = NegativeShareDetector(half_life_buckets=12.0, damp_above=0.9)
        assert (detector.half_life_buckets, detector.damp_above) == (12.0, 0.9)

    def test_calm_series_scores_low(self) -> None:
        """A steady 20% share never looks like a crisis."""
        detector = NegativeShareDetector()
        scores = []
        for negative in calm_buckets(0.2, 600):
            scores.append(detector.score_one(negative, BUCKET).score)
            detector.learn_one(negative, BUCKET)
        scores.sort()
        assert scores[len(scores) // 2] < 0.7
        assert scores[int(len(scores) * 0.95)] < 0.97
        assert scores[-1] < 0.995
        assert detector.usual_share == pytest.approx(0.2, abs=0.02)

    def test_jump_to_eighty_percent_scores_high(self) -> None:
        """A jump from about 20% to 80% negative among 30 mentions scores above 0.995."""
        detector = trained(0.2)
        result = detector.score_one(24, BUCKET)
        assert result.score > 0.995
        assert result.expected == pytest.approx(0.2, abs=0.02)

    def test_fresh_detector_sees_a_jump(self) -> None:
        """Even without history, 24 of 30 negative stands out against the prior."""
        assert NegativeShareDetector().score_one(24, BUCKET).score > 0.995

    def test_a_new_series_with_a_high_usual_share_is_no_crisis(self) -> None:
        """A series new to the detector whose normal share is far above the prior (44 % of
        about 1,000 mentions) does not score as a crisis on its first bucket: the usual share
        is not known yet. Once it is known to be 20 %, the same bucket does."""
        assert NegativeShareDetector().score_one(420, 959).score < 0.98
        assert trained(0.2).score_one(420, 959).score > 0.995

    def test_the_spread_narrows_to_the_dispersion_as_history_grows(self) -> None:
        """The expected spread of shares starts wide (prior only) and tightens towards the
        between-bucket dispersion as mentions are learned."""
        detector = NegativeShareDetector()
        widths = [detector.concentration]
        for negative in calm_buckets(0.2, 300):
            detector.learn_one(negative, BUCKET)
            widths.append(detector.concentration)
        assert widths[0] < CONCENTRATION / 2
        assert all(a <= b for a, b in pairwise(widths[:100]))
        assert widths[-1] == pytest.approx(CONCENTRATION, rel=0.01)

    @pytest.mark.parametrize("usual", [None, 0.1, 0.2, 0.3, 0.5])
    def test_two_of_three_never_scores_high(self, usual: float | None) -> None:
        """A handful of posts (2 or 3 of 3 negative) never scores above 0.99."""
        detector = NegativeShareDetector() if usual is None else trained(usual)
        assert detector.score_one(2, 3).score <= 0.99
        assert detector.score_one(1, 1).score <= 0.99

    def test_score_grows_with_the_share(self) -> None:
        """More negatives among the same count score higher."""
        detector = trained(0.2)
        scores = [detector.score_one(k, BUCKET).score for k in range(BUCKET + 1)]
        assert all(a <= b for a, b in pairwise(scores))
        assert scores[-1] > scores[6]

    def test_more_evidence_scores_higher(self) -> None:
        """The same 80% share is more surprising over 100 mentions than over 5."""
        detector = trained(0.2)
        assert detector.score_one(80, 100).score > detector.score_one(4, 5).score

    @pytest.mark.parametrize(("negative", "count"), [(0, 0), (0, 30), (5, 0)])
    def test_nothing_to_judge_scores_zero(self, negative: int, count: int) -> None:
        """An empty bucket or one with no negatives scores zero."""
        assert NegativeShareDetector().score_one(negative, count).score == 0.0

    def test_long_crisis_is_learned_slowly(self) -> None:
        """Four hours of 80% negative do not become the usual share."""
        damped = trained(0.2)
        undamped = trained(0.2)
        undamped.damp_above = 1.1  # never damp: the same learning without the brake
        before = damped.usual_share
        for _ in range(48):
            damped.learn_one(24, BUCKET)
            undamped.learn_one(24, BUCKET)
        assert damped.usual_share < 0.3
        assert damped.usual_share - before < (undamped.usual_share - before) / 4
        assert damped.usual_share > before  # damped, not frozen
        assert damped.score_one(24, BUCKET).score > 0.995  # still a crisis after four hours

    def test_a_lasting_change_is_learned_eventually(self) -> None:
        """A new normal well within the usual band is learned at full speed."""
        detector = NegativeShareDetector(half_life_buckets=48.0)
        for negative in calm_buckets(0.2, 300):
            detector.learn_one(negative, BUCKET)
        for negative in calm_buckets(0.3, 400, seed=3):
            detector.learn_one(negative, BUCKET)
        assert detector.usual_share == pytest.approx(0.3, abs=0.03)

    def test_forgetting_has_a_floor(self) -> None:
        """A long silence does not let one post become the usual share."""
        detector = NegativeShareDetector(half_life_buckets=1.0)
        for _ in range(50):
            detector.learn_one(0, 0)
        detector.learn_one(1, 1)
        assert detector.usual_share < 0.5

    def test_scores_in_unit_interval(self) -> None:
        """Every score lies in [0, 1] and every expectation is a share."""
        rng = random.Random(11)
        detector = NegativeShareDetector(half_life_buckets=20.0)
        for _ in range(150):
            count = rng.choice([0, 1, 3, 30, 500, 5_000])
            negative = rng.randint(0, count)
            result = detector.score_one(negative, count)
            assert 0.0 <= result.score <= 1.0
            assert 0.0 <= result.expected <= 1.0
            detector.learn_one(negative, count)


def _whole_sum(k: int, n: int, mean: float, concentration: float) -> float:
    """P(X ≥ k) by summing every term, in order, with `math.lgamma` throughout."""
    mean = min(max(mean, 1e-4), 1 - 1e-4)
    alpha, beta = mean * concentration, (1 - mean) * concentration
    log_norm = math.lgamma(alpha + beta) - math.lgamma(alpha) - math.lgamma(beta)
    log_norm -= math.lgamma(n + alpha + beta)
    total = 0.0
    for x in range(k, n + 1):
        total += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(x + 1)
            - math.lgamma(n - x + 1)
            + math.lgamma(x + alpha)
            + math.lgamma(n - x + beta)
            + log_norm
        )
    return min(1.0, total)
