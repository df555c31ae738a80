"""How surprising a bucket's negative share is, against the series' usual share.

The usual share is an exponentially weighted estimate (half-life about a day of buckets) with a
weak prior. A bucket's score is one minus the beta-binomial tail probability of seeing at least
that many negative mentions among that many: over-dispersed, because angry posts come in threads,
not as independent coin flips. A handful of posts therefore never scores high, and a crisis is
damped when learned so it does not become the usual.

While little has been learned, the usual share itself is uncertain, and that uncertainty widens
the expected spread of a bucket's share (the two variances add): a new series whose normal share
is well above the prior is not taken for a crisis on its first busy bucket, while 24 of 30
negative still is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

PRIOR_SHARE = 0.2  # a brand's share of negative mentions before it has history
PRIOR_WEIGHT = 20.0  # how many mentions that prior is worth
CONCENTRATION = 40.0  # beta-binomial dispersion: lower means burstier shares
MAX_TRIALS = 2_000  # larger buckets are scaled down: the tail sum stays cheap


@dataclass(frozen=True, slots=True)
class NegativeScore:
    score: float  # in [0, 1]
    expected: float  # the usual negative share


class NegativeShareDetector:
    """Online detector of a rise in the share of negative mentions, in river's shape."""

    def __init__(self, half_life_buckets: float = 288.0, damp_above: float = 0.99) -> None:
        self.half_life_buckets = half_life_buckets
        self.damp_above = damp_above
        self._decay = 0.5 ** (1.0 / half_life_buckets)
        self._negative = PRIOR_SHARE * PRIOR_WEIGHT
        self._total = PRIOR_WEIGHT

    @property
    def usual_share(self) -> float:
        return self._negative / self._total

    def score_one(self, negative: int, count: int) -> NegativeScore:
        share = self.usual_share
        if count == 0 or negative == 0:
            return NegativeScore(0.0, share)
        tail = beta_binomial_tail(negative, count, share, self.concentration)
        return NegativeScore(1.0 - tail, share)

    @property
    def concentration(self) -> float:
        """The spread of bucket shares around the usual one, as a beta concentration: the
        between-bucket dispersion plus the uncertainty of a usual share learned from `_total`
        mentions (a beta's variance is share × (1 − share) / (concentration + 1))."""
        return 1.0 / (1.0 / (self._total + 1.0) + 1.0 / (CONCENTRATION + 1.0)) - 1.0

    def learn_one(self, negative: int, count: int) -> None:
        self._learn(negative, count, self.score_one(negative, count).score)

    def score_and_learn(self, negative: int, count: int) -> NegativeScore:
        """`score_one`, then `learn_one`, scoring once."""
        verdict = self.score_one(negative, count)
        self._learn(negative, count, verdict.score)
        return verdict

    def _learn(self, negative: int, count: int, score: float) -> None:
        weight = 1.0
        if count and score > self.damp_above:
            weight = 0.1  # damped, not frozen: a lasting change is still learned, slowly
        self._negative = self._negative * self._decay + weight * negative
        self._total = self._total * self._decay + weight * count
        floor = PRIOR_WEIGHT * 0.25  # never forget so much that one post is "the usual"
        if self._total < floor:
            self._negative += (floor - self._total) * PRIOR_SHARE
            self._total = floor


def beta_binomial_tail(k: int, n: int, mean: float, concentration: float) -> float:
    """P(X ≥ k) for X ~ BetaBinomial(n, α, β) with α/(α+β) = mean and α+β = concentration.

    An upper tail (k above the mean) is summed from k up; otherwise the tail is one less the sum
    from k − 1 down, so a tail near 1 keeps its digits and a tiny one is not lost to rounding.
    """
    if n > MAX_TRIALS:
        k, n = round(k * MAX_TRIALS / n), MAX_TRIALS
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    mean = min(max(mean, 1e-4), 1 - 1e-4)
    alpha, beta = mean * concentration, (1 - mean) * concentration
    if k > mean * n:
        return min(1.0, _pmf_run(k, n - k, n, alpha, beta, up=True))
    return max(0.0, 1.0 - _pmf_run(k - 1, k - 1, n, alpha, beta, up=False))


_SHORT_RUN = 48  # terms below which a plain loop beats numpy's per-call overhead
_Ratio = TypeVar("_Ratio", float, npt.NDArray[np.float64])


def _up_ratio(x: _Ratio, n: int, alpha: float, beta: float) -> _Ratio:
    """P(X = x + 1) / P(X = x)."""
    rest = n - x  # written once: on arrays every operation is a pass
    return rest * (x + alpha) / ((x + 1) * (rest + (beta - 1)))


def _down_ratio(x: _Ratio, n: int, alpha: float, beta: float) -> _Ratio:
    """P(X = x − 1) / P(X = x)."""
    rest = n - x
    return x * (rest + beta) / ((rest + 1) * (x + (alpha - 1)))


def _pmf_run(first: int, steps: int, n: int, alpha: float, beta: float, *, up: bool) -> float:
    """P(X = first) and the `steps` probabilities after it (above it if `up`, else below).

    Only the first term costs log-gammas; each next one is the last times a ratio of
    polynomials in x. Long runs take the ratios' running product from numpy in one go.
    """
    lgamma = math.lgamma
    term = math.exp(
        lgamma(n + 1)
        - lgamma(first + 1)
        - lgamma(n - first + 1)
        + lgamma(first + alpha)
        + lgamma(n - first + beta)
        + lgamma(alpha + beta)
        - lgamma(alpha)
        - lgamma(beta)
        - lgamma(n + alpha + beta)
    )
    step, ratio = (1, _up_ratio) if up else (-1, _down_ratio)
    if steps <= _SHORT_RUN:
        total = term
        for x in range(first, first + step * steps, step):
            term *= ratio(float(x), n, alpha, beta)
            total += term
        return total
    xs = np.arange(first, first + step * steps, step, dtype=np.float64)
    return term * (1.0 + float(np.cumprod(ratio(xs, n, alpha, beta)).sum()))
