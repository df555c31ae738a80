"""The default volume detector: how surprising is this bucket's count for this series?

The expected count is a same-time-of-day profile (hourly slots, averaged over the previous days)
scaled by how busy the series has been lately relative to that profile; until a day has been
seen, a plain level (recent mean) stands in. Counts are negative binomial around it, with an
over-dispersion fitted robustly online. The surprise is the tail probability of this bucket's
count and of the last two hours' total (which catches surges that build without one extreme
bucket), whichever is smaller. That p-value is then calibrated against the series' own history of
surprises (an exponential tail fitted above p = 1 %, peaks-over-threshold style), so that one
threshold means the same rarity on a busy ticker and on a sparse one.

A surge must be confirmed: a bucket scores above what any merely elevated bucket earns only when
it is itself above its usual range (p < 5 %) and so was another bucket in the half hour before;
it then carries the highest score of those buckets. A single five-minute burst that is over by
the next buckets (one bot's blast, one batch of retweets) does not page; a surge pages one to six
buckets after it starts.

Learning is damped: the baseline learns from counts clipped to one standard deviation around the
expectation, so a spike does not become the baseline while it lasts, but a lasting level shift is
absorbed within a day or two. Dispersion and calibration learn from every bucket, with each
bucket's influence bounded (clipped residuals, capped excesses).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

DEFAULT_QUIET = timedelta(hours=12)
"""A surge must be quiet this long before a new page may open."""

DEFAULT_CONFIRM = timedelta(minutes=30)
"""A second elevated bucket within this long confirms a surge."""

ELEVATED = math.log10(20.0)
"""A bucket is above its usual range when its count alone has p < 5 % (surprise > 1.3)."""

SENSITIVITY: dict[str, float] = {"low": 0.6, "balanced": 0.5, "high": 0.4}
"""Thresholds on `VolumeScore.score`, which is calibrated (`recurrence`): 0.5 is a bucket the
series sees once a week; with five-minute buckets 0.6 about once in 10 months, 0.4 about once in
13 hours."""

LONGEST_PERIOD = timedelta(days=365)  # `recurrence` says no more: beyond, it extrapolates
LN10 = math.log(10.0)
MIN_MEAN = 0.05
GONE_QUIET = 0.5  # busy at less than this share of its usual: a series gone quiet lately
TAIL_BASE = 2.0  # surprises above -log10 p = 2 feed the calibration tail
MAX_SURPRISE = 300.0
_NORMAL = NormalDist()


Assessment = tuple[float | None, float, bool]
"""A bucket before confirmation: raw surprise (None while warming up), score, elevated or not."""


@dataclass(frozen=True, slots=True)
class VolumeScore:
    """One bucket's verdict."""

    score: float  # anomaly score in [0, 1]
    expected: float  # expected count for this bucket
    upper: float  # the count that would reach the balanced threshold


Judgement = tuple[int, float, Assessment, VolumeScore]
"""A bucket judged: its time-of-day slot, expected count, assessment and verdict."""


def recurrence(score: float, bucket: timedelta) -> timedelta:
    """How often a series sees a bucket of this score, by the calibration that scores are
    (`SENSITIVITY`): 0.5 once a week; with five-minute buckets 0.6 about once in 10 months (at
    most `LONGEST_PERIOD`). A score s is a surprise of s / (1 - s) weeks' worth of buckets."""
    per_week = timedelta(days=7) / bucket
    if score <= 0.0:
        return bucket
    weeks_exponent = score / (1.0 - score) if score < 1.0 else math.inf
    longest = math.log(LONGEST_PERIOD / bucket)
    if weeks_exponent * math.log(per_week) >= longest:
        return LONGEST_PERIOD
    return bucket * math.pow(per_week, weeks_exponent)


def _rate(halflife_steps: float) -> float:
    """The exponential-smoothing rate whose memory halves every `halflife_steps` updates."""
    return 1.0 - math.pow(0.5, 1.0 / max(halflife_steps, 1.0))


def _deviance(y: float, mu: float, alpha: float) -> float:
    """The negative binomial deviance of a (continuous) count `y` above mean `mu`."""
    r = 1.0 / alpha
    return 2.0 * (y * math.log(y / mu) - (y + r) * math.log((y + r) / (mu + r)))


def nb_surprise(count: float, mu: float, alpha: float) -> float:
    """-log10 P(X >= count) for a negative binomial of mean `mu` and variance `mu + alpha mu^2`.

    Uses the signed deviance residual of `count - 1/2` as a standard normal deviate.
    """
    y = count - 0.5
    if y <= mu:
        return 0.0
    z = math.sqrt(max(_deviance(y, mu, alpha), 0.0))
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    if p > 0.0:
        return min(-math.log10(p), MAX_SURPRISE)
    return MAX_SURPRISE


def nb_quantile(surprise: float, mu: float, alpha: float) -> float:
    """The count whose `nb_surprise` is `surprise` (Newton steps on the deviance)."""
    if surprise <= 0.0:
        return mu
    z = -_NORMAL.inv_cdf(10.0 ** -min(surprise, MAX_SURPRISE))
    target = z * z
    floor = mu * 1.0001  # the deviance's root lies above the mean (and logs need y > 0)
    y = max(mu + z * math.sqrt(mu + alpha * mu * mu) + 1.0, floor)
    r = 1.0 / alpha
    mu_r = mu + r
    for _ in range(8):  # the deviance and its slope share their two logarithms
        log_y = math.log(y / mu)
        log_yr = math.log((y + r) / mu_r)
        deviance = 2.0 * (y * log_y - (y + r) * log_yr)
        step = (deviance - target) / (2.0 * (log_y - log_yr))
        y = max(y - step, floor)
        if abs(step) <= 1e-9 * y:
            break  # converged: usually after four steps
    return y + 0.5


class Dispersion:
    """Online, robust over-dispersion `alpha` of counts around their expectation.

    Moves `alpha` so that the mean clipped squared Pearson residual matches its normal-theory
    value: big spikes weigh no more than a 2-sigma bucket.
    """

    def __init__(self, halflife_steps: float, alpha: float = 0.3, clip: float = 2.0) -> None:
        self.alpha = alpha
        self._rate = _rate(halflife_steps)
        self._clip2 = clip * clip
        inside = math.erf(clip / math.sqrt(2.0))
        density = math.exp(-clip * clip / 2.0) / math.sqrt(2.0 * math.pi)
        self._target = inside - 2.0 * clip * density + self._clip2 * (1.0 - inside)
        self._n = 0

    def sd(self, mu: float) -> float:
        return math.sqrt(mu + self.alpha * mu * mu)

    def update(self, count: float, mu: float) -> None:
        r2 = (count - mu) ** 2 / (mu + self.alpha * mu * mu)
        rate = max(self._rate, 1.0 / (self._n + 10))
        step = 2.0 * rate * (min(r2, self._clip2) - self._target) / self._target
        self.alpha = min(max(self.alpha * math.exp(step), 0.005), 10.0)
        self._n += 1


class SurpriseTail:
    """Calibrates raw surprises against the series' own history (peaks over threshold).

    Surprises above `TAIL_BASE` are modelled as exponential excesses; the prior (held for a
    week's worth of buckets) is a perfectly calibrated model: P(s > 2) = 1 %, mean excess 1/ln 10.
    """

    def __init__(self, halflife_steps: float, prior_steps: float) -> None:
        self.exceed = 10.0**-TAIL_BASE
        self.excess = 1.0 / LN10
        self._rate = _rate(halflife_steps)
        self._prior = prior_steps
        self._excess_rate = _rate(100.0)
        self._n = 0
        self._n_over = 0

    def calibrated(self, surprise: float) -> float:
        """-log10 of how often the series produces a surprise this large."""
        if surprise <= TAIL_BASE:
            return surprise * -math.log10(self.exceed) / TAIL_BASE
        return -math.log10(self.exceed) + (surprise - TAIL_BASE) / (self.excess * LN10)

    def raw(self, calibrated: float) -> float:
        """Inverse of `calibrated`."""
        base = -math.log10(self.exceed)
        if calibrated <= base:
            return calibrated * TAIL_BASE / base
        return TAIL_BASE + (calibrated - base) * self.excess * LN10

    def update(self, surprise: float) -> None:
        over = surprise > TAIL_BASE
        self.exceed += max(self._rate, 1.0 / (self._n + self._prior)) * (over - self.exceed)
        self._n += 1
        if over:
            rate = max(self._excess_rate, 1.0 / (self._n_over + 10))
            excess = min(surprise - TAIL_BASE, 5.0 * self.excess)
            self.excess += rate * (excess - self.excess)
            self._n_over += 1


class VolumeDetector:
    """Online, causal volume anomaly detector for one series of bucket counts (river's shape)."""

    def __init__(
        self,
        bucket_seconds: int = 300,
        slots_per_day: int = 24,
        window: timedelta = timedelta(hours=2),
        level_halflife: timedelta = timedelta(hours=2),
        ratio_halflife: timedelta = timedelta(days=1),
        profile_halflife_days: float = 7.0,
        dispersion_halflife: timedelta = timedelta(days=2),
        tail_halflife: timedelta = timedelta(days=7),
        warmup: timedelta = timedelta(hours=3),
        clamp_z: float = 1.0,
        confirm_within: timedelta = DEFAULT_CONFIRM,
    ) -> None:
        self.bucket_seconds = bucket_seconds
        self.slots_per_day = slots_per_day
        self.window = window
        self.level_halflife = level_halflife
        self.ratio_halflife = ratio_halflife
        self.profile_halflife_days = profile_halflife_days
        self.dispersion_halflife = dispersion_halflife
        self.tail_halflife = tail_halflife
        self.warmup = warmup
        self.clamp_z = clamp_z
        self.confirm_within = confirm_within
        week = 7 * 86400 / bucket_seconds
        self._week_surprise = math.log10(week)
        self._day = round(86400 / bucket_seconds)
        self._warm = max(1, round(warmup / timedelta(seconds=bucket_seconds)))
        self._a_level = _rate(level_halflife / timedelta(seconds=bucket_seconds))
        self._a_ratio = _rate(ratio_halflife / timedelta(seconds=bucket_seconds))
        self._a_profile = _rate(profile_halflife_days * self._day / slots_per_day)
        disp_steps = dispersion_halflife / timedelta(seconds=bucket_seconds)
        self._single = Dispersion(disp_steps)
        self._summed = Dispersion(disp_steps)
        self._tail = SurpriseTail(tail_halflife / timedelta(seconds=bucket_seconds), week)
        k = max(2, round(window / timedelta(seconds=bucket_seconds)))
        self._recent: deque[tuple[float, float]] = deque(maxlen=k - 1)  # (count, expected)
        self._recent_sum = (0.0, 0.0)  # their totals
        confirm = max(1, round(confirm_within / timedelta(seconds=bucket_seconds)))
        self._lately: deque[tuple[float, bool]] = deque(maxlen=confirm)  # (score, elevated)
        self._n = 0
        self._level = 0.0
        self._profile = [0.0] * slots_per_day
        self._seen = [0] * slots_per_day
        self._busy = 0.0  # smoothed clipped counts ...
        self._usual = 0.0  # ... and the profile at the same buckets: their ratio scales the profile

    def _slot(self, at: datetime) -> int:
        seconds = at.hour * 3600 + at.minute * 60 + at.second
        return seconds * self.slots_per_day // 86400

    def _expected(self, slot: int) -> float:
        if self._n >= self._day and self._usual > 0.0:
            return max(self._profile[slot] * self._busy / self._usual, MIN_MEAN)
        return max(self._level, MIN_MEAN)

    def _assess(self, count: float, mu: float) -> Assessment:
        """Judge a bucket before confirmation (see `Assessment`)."""
        if self._n < self._warm:
            return None, 0.0, False
        single = nb_surprise(count, mu, self._single.alpha)
        total = count + self._recent_sum[0]
        expected = mu + self._recent_sum[1]
        summed = nb_surprise(total, expected, self._summed.alpha)
        surprise = max(single, summed)
        elevated = single > ELEVATED or (
            summed > ELEVATED and self._broadly_elevated(count, mu, expected)
        )
        return surprise, self._score(self._tail.calibrated(surprise)), elevated

    def _broadly_elevated(self, count: float, mu: float, expected: float) -> bool:
        """Whether the two-hour total is above its usual range with every bucket capped at two
        standard deviations over its expectation: a rise spread over many buckets is, so a
        surge that builds without one extreme bucket confirms itself bucket after bucket; a
        burst of a few buckets is not, so it cannot confirm itself through the totals it sits
        in, nor keep an incident firing once it is over."""
        sd = self._single.sd
        capped = sum(min(c, m + 2.0 * sd(m)) for c, m in ((count, mu), *self._recent))
        return nb_surprise(capped, expected, self._summed.alpha) > ELEVATED

    def _score(self, calibrated: float) -> float:
        return calibrated / (calibrated + self._week_surprise)

    def _confirmed(self, score: float, elevated: bool) -> float:
        """A confirmed surge's score: the highest of its recent buckets'. Unconfirmed, a bucket
        scores no more than a merely elevated one."""
        if elevated and any(e for _, e in self._lately):
            return max(score, *(s for s, _ in self._lately))
        return min(score, self._score(self._tail.calibrated(ELEVATED)))

    def _verdict(self, mu: float, score: float, elevated: bool) -> VolumeScore:
        balanced = SENSITIVITY["balanced"]
        target = self._tail.raw(balanced / (1.0 - balanced) * self._week_surprise)
        upper = nb_quantile(target, mu, self._single.alpha)
        return VolumeScore(self._confirmed(score, elevated), mu, upper)

    def score_one(self, count: float, at: datetime) -> VolumeScore:
        """Score a bucket's count (`at` is the bucket's start, UTC) without learning from it."""
        return self.judge(count, at)[3]

    def judge(self, count: float, at: datetime) -> Judgement:
        """`score_one`, keeping what learning from the same bucket then needs: `learn_judged`
        or `observe_judged` may come later (after the bucket's pages have left), as long as
        nothing else is scored or learned in between."""
        slot = self._slot(at)
        mu = self._expected(slot)
        assessed = self._assess(count, mu)
        return slot, mu, assessed, self._verdict(mu, assessed[1], assessed[2])

    def learn_judged(self, count: float, judged: Judgement) -> None:
        """`learn_one` for the bucket just judged."""
        self._learn(count, judged[0], judged[1], judged[2])

    def observe_judged(self, count: float, judged: Judgement) -> None:
        """Keep the bucket just judged among the recent ones (a surge's confirmation, the
        two-hour total) without learning the baseline from it: a bucket of a time not wholly
        watched (a downtime, a source behind) says nothing of how busy the series usually is,
        but a surge in it must still confirm and page."""
        self._remember(count, judged[1], judged[2])

    def accept_one(self, count: float, at: datetime) -> None:
        """A person said this bucket was no alarm: its expectation takes one step towards its
        count without the damping that keeps real spikes out, and never past it (the level's
        step in the first day). After it, the expectation is the time-of-day profile times the
        busyness, and moving both towards the count overshot: accepted again and again, a
        bucket of 12 had come to expect 141. So the slot's profile rises first, never past the
        count itself, and the busyness only as far as the rest of the step needs; in a series
        gone quiet (busy at less than `GONE_QUIET` of its usual), the other way round (its
        time of day is not what is wrong: raised, it would expect too much there for weeks
        once the series is busy again)."""
        slot = self._slot(at)
        mu = self._expected(slot)
        if count <= mu:
            return
        if self._n < self._day or self._usual <= 0.0:
            self._level += max(self._a_level, 1.0 / (self._n + 1)) * (count - self._level)
            return
        rate = max(self._a_profile, 1.0 / max(self._seen[slot], 1))
        wanted = mu + rate * (count - mu)
        usual, profile = self._usual, self._profile
        quiet = self._busy < GONE_QUIET * usual
        if quiet:  # back to its usual busyness at most: a quiet night slot must not scale all
            needed = wanted * usual / profile[slot] if profile[slot] > 0.0 else usual
            self._busy = max(self._busy, min(needed, usual))
        needed = wanted * usual / self._busy if self._busy > 0.0 else count
        profile[slot] = max(profile[slot], min(needed, count))
        if not quiet and profile[slot] > 0.0:
            self._busy = max(self._busy, wanted * usual / profile[slot])

    def learn_one(self, count: float, at: datetime) -> None:
        """Update the baseline, dispersion and calibration with a closed bucket's count."""
        slot = self._slot(at)
        mu = self._expected(slot)
        self._learn(count, slot, mu, self._assess(count, mu))

    def _learn(self, count: float, slot: int, mu: float, assessed: Assessment) -> None:
        surprise = assessed[0]
        if surprise is not None:
            self._tail.update(surprise)
        sd = self._single.sd(mu)
        self._single.update(count, mu)
        self._summed.update(count + self._recent_sum[0], mu + self._recent_sum[1])
        x = min(max(count, mu - self.clamp_z * sd), mu + self.clamp_z * sd) if self._n else count
        self._level += max(self._a_level, 1.0 / (self._n + 1)) * (x - self._level)
        if self._n >= self._day:
            self._busy += self._a_ratio * (x - self._busy)
            self._usual += self._a_ratio * (self._profile[slot] - self._usual)
        self._seen[slot] += 1
        rate = max(self._a_profile, 1.0 / self._seen[slot])
        self._profile[slot] += rate * (x - self._profile[slot])
        self._remember(count, mu, assessed)
        self._n += 1

    def forget_recent(self) -> None:
        """Let go of the recent buckets: after buckets passed over as unknown (a downtime), the
        last ones before it are no part of a surge now, nor of the two-hour total."""
        self._lately.clear()
        self._recent.clear()
        self._recent_sum = (0.0, 0.0)

    def _remember(self, count: float, mu: float, assessed: Assessment) -> None:
        """Keep a bucket among the recent ones: its score for confirmation, its count for the
        two-hour total."""
        self._lately.append((assessed[1], assessed[2]))
        counts, means = self._recent_sum[0] + count, self._recent_sum[1] + mu
        if len(self._recent) == self._recent.maxlen:
            old_count, old_mu = self._recent[0]
            counts, means = max(counts - old_count, 0.0), max(means - old_mu, 0.0)
        self._recent_sum = (counts, means)
        self._recent.append((count, mu))
