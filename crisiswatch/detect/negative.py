"""How surprising a bucket's negative share is, against the series' usual share.

The usual share is an exponentially weighted estimate (half-life about a day of buckets) with a
weak prior. A bucket's score is one minus the beta-binomial tail probability of seeing at least
that many negative mentions among that many: over-dispersed, because angry posts come in threads,
not as independent coin flips. A handful of posts therefore never scores high, and a crisis is
damped when learned so it does not become the usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        tail = beta_binomial_tail(negative, count, share, CONCENTRATION)
        return NegativeScore(1.0 - tail, share)

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


_LGAMMA_WHOLE = [math.inf, *(math.lgamma(i) for i in range(1, MAX_TRIALS + 2))]  # [i]: lgamma(i)


def beta_binomial_tail(k: int, n: int, mean: float, concentration: float) -> float:
    """P(X ≥ k) for X ~ BetaBinomial(n, α, β) with α/(α+β) = mean and α+β = concentration.

    The terms are summed from k up, as they come. Unless α and β are both below 1 (a U shape),
    the terms only fall once past the mode; when they have fallen below half the sum's last
    digit, no later term can change the sum, so the loop stops there with exactly the full sum.
    """
    if n > MAX_TRIALS:
        k, n = round(k * MAX_TRIALS / n), MAX_TRIALS
    if k <= 0:
        return 1.0
    mean = min(max(mean, 1e-4), 1 - 1e-4)
    alpha, beta = mean * concentration, (1 - mean) * concentration
    log_norm = math.lgamma(alpha + beta) - math.lgamma(alpha) - math.lgamma(beta)
    log_norm -= math.lgamma(n + alpha + beta)
    whole, lgamma, exp, ulp = _LGAMMA_WHOLE, math.lgamma, math.exp, math.ulp
    log_choose_n = whole[n + 1]
    total = previous = 0.0
    unimodal = alpha >= 1.0 or beta >= 1.0
    for x in range(k, n + 1):
        log_pmf = (
            log_choose_n
            - whole[x + 1]
            - whole[n - x + 1]
            + lgamma(x + alpha)
            + lgamma(n - x + beta)
            + log_norm
        )
        term = exp(log_pmf)
        if term < previous and term < ulp(total) / 2 and unimodal:
            break
        total += term
        previous = term
    return min(1.0, total)
