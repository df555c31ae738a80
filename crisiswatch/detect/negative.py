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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PRIOR_SHARE = 0.2  # a brand's share of negative mentions before it has history
PRIOR_WEIGHT = 20.0  # how many mentions that prior is worth
CONCENTRATION = 40.0  # beta-binomial dispersion: lower means burstier shares
MAX_TRIALS = 500  # larger buckets are scaled down: the tail sum stays cheap
_BLOCK = 1 << 15  # terms per numpy pass: few enough to stay in the processor's cache


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
        return score_shares([(self, negative, count)])[0]

    def tail_case(self, negative: int, count: int) -> Case | None:
        """The tail that scores this bucket, or None when nothing negative can surprise."""
        if count == 0 or negative == 0:
            return None
        return negative, count, self.usual_share, self.concentration

    @property
    def concentration(self) -> float:
        """The spread of bucket shares around the usual one, as a beta concentration: the
        between-bucket dispersion plus the uncertainty of a usual share learned from `_total`
        mentions (a beta's variance is share × (1 − share) / (concentration + 1))."""
        return 1.0 / (1.0 / (self._total + 1.0) + 1.0 / (CONCENTRATION + 1.0)) - 1.0

    def learn_one(self, negative: int, count: int) -> None:
        self.learn_scored(negative, count, self.score_one(negative, count).score)

    def learn_scored(self, negative: int, count: int, score: float) -> None:
        """`learn_one` for a bucket already scored (`score_shares`)."""
        weight = 1.0
        if count and score > self.damp_above:
            weight = 0.1  # damped, not frozen: a lasting change is still learned, slowly
        self._negative = self._negative * self._decay + weight * negative
        self._total = self._total * self._decay + weight * count
        floor = PRIOR_WEIGHT * 0.25  # never forget so much that one post is "the usual"
        if self._total < floor:
            self._negative += (floor - self._total) * PRIOR_SHARE
            self._total = floor


def score_shares(
    buckets: Sequence[tuple[NegativeShareDetector, int, int]],
) -> list[NegativeScore]:
    """Score each (detector, negative, count) without learning, the tails together."""
    cases = [detector.tail_case(negative, count) for detector, negative, count in buckets]
    tails = iter(beta_binomial_tails([case for case in cases if case is not None]))
    return [
        NegativeScore(0.0 if case is None else 1.0 - next(tails), detector.usual_share)
        for (detector, _, _), case in zip(buckets, cases, strict=True)
    ]


def beta_binomial_tail(k: int, n: int, mean: float, concentration: float) -> float:
    """P(X ≥ k) for X ~ BetaBinomial(n, α, β) with α/(α+β) = mean and α+β = concentration."""
    return beta_binomial_tails([(k, n, mean, concentration)])[0]


Case = tuple[int, int, float, float]
"""A tail to compute: (k, n, mean, concentration)."""

_Run = tuple[int, int, int, float, float, float]
"""A run of terms to sum: (first x, steps, n, α, β, log P(X = first))."""


def beta_binomial_tails(cases: Sequence[Case]) -> list[float]:
    """`beta_binomial_tail` of every case, the terms of all of them summed together.

    An upper tail (k above the mean) is summed from k up; otherwise the tail is one less the sum
    from k − 1 down, so a tail near 1 keeps its digits and a tiny one is not lost to rounding.
    A closing bucket end scores all its series' tails together: numpy's cost per call, paid
    once rather than once per series, had been most of the time.
    """
    tails = [0.0] * len(cases)
    runs: dict[bool, list[_Run]] = {True: [], False: []}
    of_case: dict[bool, list[int]] = {True: [], False: []}  # which case each run answers
    for case, (k, n, mean, concentration) in enumerate(cases):
        if n > MAX_TRIALS:
            k, n = round(k * MAX_TRIALS / n), MAX_TRIALS
        if k <= 0 or k > n:
            tails[case] = 1.0 if k <= 0 else 0.0
            continue
        mean = min(max(mean, 1e-4), 1 - 1e-4)
        alpha, beta = mean * concentration, (1 - mean) * concentration
        up = k > mean * n
        first, steps = (k, n - k) if up else (k - 1, k - 1)
        runs[up].append((first, steps, n, alpha, beta, _log_pmf(first, n, alpha, beta)))
        of_case[up].append(case)
    for up, group in runs.items():
        for case, total in zip(of_case[up], _run_sums(group, up=up), strict=True):
            tails[case] = min(1.0, total) if up else max(0.0, 1.0 - total)
    return tails


def _log_pmf(x: int, n: int, alpha: float, beta: float) -> float:
    lgamma = math.lgamma
    return (
        lgamma(n + 1)
        - lgamma(x + 1)
        - lgamma(n - x + 1)
        + lgamma(x + alpha)
        + lgamma(n - x + beta)
        + lgamma(alpha + beta)
        - lgamma(alpha)
        - lgamma(beta)
        - lgamma(n + alpha + beta)
    )


def _run_sums(group: Sequence[_Run], *, up: bool) -> list[float]:
    """For each run, P(X = first) plus the `steps` probabilities after it (above it if `up`,
    else below). Only the first term costs log-gammas; each next one is the last times a ratio
    of polynomials in x. Runs of similar length go through numpy together, one row each, in
    blocks small enough to stay in the processor's cache."""
    order = sorted(range(len(group)), key=lambda run: group[run][1])
    totals = [0.0] * len(group)
    start = 0
    while start < len(order):
        end = start + 1  # rows taken while the block, padded to its longest run, stays small
        while end < len(order) and (end + 1 - start) * group[order[end]][1] <= _BLOCK:
            end += 1
        rows = [group[run] for run in order[start:end]]
        for run, total in zip(order[start:end], _block_sums(rows, up=up), strict=True):
            totals[run] = total
        start = end
    return totals


def _block_sums(rows: Sequence[_Run], *, up: bool) -> list[float]:
    first, steps, n, alpha, beta, log_first = (
        np.array(column, dtype=np.float64)[:, None] for column in zip(*rows, strict=True)
    )
    step = np.arange(steps[-1, 0], dtype=np.float64)  # the longest run is last
    x = first + step if up else first - step
    rest = n - x
    with np.errstate(divide="ignore", invalid="ignore"):  # past a run's end: masked below
        if up:  # P(X = x + 1) / P(X = x)
            ratio = rest * (x + alpha) / ((x + 1.0) * (rest + (beta - 1.0)))
        else:  # P(X = x − 1) / P(X = x)
            ratio = x * (rest + beta) / ((rest + 1.0) * (x + (alpha - 1.0)))
    ratio = np.where(step < steps, ratio, 0.0)
    sums = np.cumprod(ratio, axis=1).sum(axis=1) if len(step) else np.zeros(len(rows))
    totals: list[float] = (np.exp(log_first[:, 0]) * (1.0 + sums)).tolist()
    return totals
