"""Closed buckets → signals: each series' own online detectors score, then learn.

Every series (brand × topic × view) has a volume detector, a negative-share detector and a usual
count per watched term set (for keyword bursts); every brand has a bounded memory of the terms its
series have had (for emerging terms). Scoring comes before learning (river's order), so a bucket
is judged against what was known before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter

from crisiswatch.detect.negative import NegativeShareDetector, score_shares
from crisiswatch.detect.volume import Judgement, VolumeDetector
from crisiswatch.domain import Bucket, SeriesKey, Signal

BURST_HALF_LIFE = 288.0  # buckets (a day of 5-minute buckets) for a term set's usual count
KNOWN_TERMS = 20_000  # terms remembered per brand at most, the longest unseen forgotten first
KNOWN_TERMS_BUDGET = 500_000  # terms remembered over all brands: 2,500 a brand for 200 brands
KNOWN_TERMS_LEAST = 1_000  # terms remembered per brand at least, however many brands
TERMS_WARMUP = 288  # buckets before any term counts as new (a day of 5-minute buckets)
MIN_NEW_TERM = 2  # a term must appear in this many mentions of a bucket to be news
ACCEPTED_KEPT = 10_000  # buckets said to be no alarm, remembered so that each is learned once


class KnownTerms:
    """The terms a brand's series have had among their top terms, in two generations: terms
    go into the newer one, and when it holds half of `capacity`, it becomes the older one and
    the older is forgotten. A term is kept while fewer than half of `capacity` other terms come,
    and forgotten by the time `capacity` have; one seen again is kept. Memory is set by a budget
    shared by the brands, not by their vocabulary (thousands of words a day for a busy brand),
    and no bucket close pays for sorting what is known. The generations are dicts of str to
    None, which the cyclic garbage collector does not track (sets it would walk on every full
    collection)."""

    __slots__ = ("capacity", "newer", "older")

    def __init__(self, capacity: int = KNOWN_TERMS) -> None:
        self.capacity = capacity
        self.newer: dict[str, None] = {}
        self.older: dict[str, None] = {}

    def __contains__(self, term: str) -> bool:
        return term in self.newer or term in self.older

    def __len__(self) -> int:
        return len(self.newer.keys() | self.older.keys())

    def learn(self, top_terms: Iterable[tuple[str, int]]) -> None:
        self.newer.update(dict.fromkeys(map(itemgetter(0), top_terms)))
        if len(self.newer) >= self.capacity // 2:
            self.older, self.newer = self.newer, {}


@dataclass(slots=True)
class _SeriesDetectors:
    volume: VolumeDetector
    known_terms: KnownTerms  # the brand's, shared by its series
    negative: NegativeShareDetector = field(default_factory=NegativeShareDetector)
    previous_count: int = 0
    buckets: int = 0
    burst_usual: dict[str, float] = field(default_factory=dict)

    def new_terms(self, bucket: Bucket) -> tuple[tuple[str, int], ...]:
        if self.buckets < TERMS_WARMUP:
            return ()
        # the generations looked up here, not through `KnownTerms.__contains__`: a method call
        # per term was most of the cost, 36,000 terms at each close of 200 brands
        newer, older = self.known_terms.newer, self.known_terms.older
        return tuple(
            [
                (t, n)
                for t, n in bucket.top_terms
                if n >= MIN_NEW_TERM and t not in newer and t not in older
            ]
        )

    def observe(self, bucket: Bucket) -> None:
        """What a bucket teaches whether or not its time was wholly watched: the count the
        next one rises from, and its terms."""
        self.previous_count = bucket.count
        self.known_terms.learn(bucket.top_terms)

    def learn(self, bucket: Bucket, decay: float) -> None:
        self.observe(bucket)
        self.buckets += 1
        if bucket.bursts or self.burst_usual:
            counts = dict(bucket.bursts)
            for term_set in counts.keys() | self.burst_usual.keys():
                usual = self.burst_usual.get(term_set, 0.0)
                seen = min(counts.get(term_set, 0), 3.0 * usual + 1.0)  # a burst is damped
                self.burst_usual[term_set] = usual * decay + seen * (1.0 - decay)


class SignalDetector:
    """Holds the learned state of every series; its state pickles whole for checkpoints."""

    def __init__(self, bucket_seconds: int) -> None:
        self.bucket_seconds = bucket_seconds
        self._series: dict[SeriesKey, _SeriesDetectors] = {}
        self._known: dict[str, KnownTerms] = {}  # brand -> the terms its series have had
        self._decay = 0.5 ** (1.0 / BURST_HALF_LIFE)
        # the buckets said to be no alarm, oldest first (kept here, not in each series' slots:
        # a checkpoint with a slot the previous release lacks would not restore there)
        self._accepted: dict[tuple[SeriesKey, datetime], None] = {}

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore from a checkpoint, including one saved before `_accepted` existed."""
        self._accepted = {}
        self.__dict__.update(state)

    def accept(self, bucket: Bucket) -> bool:
        """Feedback: this bucket's volume was no alarm (a False alarm on its page); whether it
        was learned. Each bucket is learned so once, however often it is said (each time would
        count as more evidence), whichever bucket was learned before: an incident's newer,
        bigger bucket, or an older incident's, is learned too."""
        detectors = self._series.get(bucket.series)
        key = (bucket.series, bucket.start)
        if detectors is None or key in self._accepted:
            return False
        self._accepted[key] = None
        if len(self._accepted) > ACCEPTED_KEPT:
            del self._accepted[next(iter(self._accepted))]
        detectors.volume.accept_one(bucket.count, bucket.start)
        return True

    def prepare(self, series: Iterable[SeriesKey]) -> None:
        """Hold the detectors of exactly these series: those not seen yet are set up now (at
        start or a reload), not when their first bucket closes; those no longer configured are
        let go (each reload that edits a filtered rule's filter makes new views, whose old
        detectors would otherwise stay in memory and in every checkpoint). The memory of known
        terms is shared out among the brands."""
        wanted = set(series)
        for gone in self._series.keys() - wanted:
            del self._series[gone]
        for brand in self._known.keys() - {key.brand for key in wanted}:
            del self._known[brand]
        brands = {self._detectors(key).known_terms for key in wanted}
        share = KNOWN_TERMS_BUDGET // max(len(brands), 1)
        for known in brands:
            known.capacity = min(max(share, KNOWN_TERMS_LEAST), KNOWN_TERMS)

    def _detectors(self, key: SeriesKey) -> _SeriesDetectors:
        detectors = self._series.get(key)
        if detectors is None:
            known = self._known.get(key.brand)
            if known is None:
                known = self._known[key.brand] = KnownTerms()
            volume = VolumeDetector(bucket_seconds=self.bucket_seconds)
            detectors = self._series[key] = _SeriesDetectors(volume, known)
        return detectors

    def forget_recent(self) -> None:
        """Buckets were passed over as unknown (a downtime): no series' recent buckets are
        recent any more."""
        for detectors in self._series.values():
            detectors.volume.forget_recent()
            detectors.previous_count = 0  # no rise from a bucket days ago

    def signal(self, bucket: Bucket) -> Signal:
        """Score a closed bucket against its series' history, then learn from it (a bucket
        alone: the series of one bucket end go through `signals` together)."""
        return self.signals([bucket])[0]

    def signals(self, buckets: Sequence[Bucket], *, learn: bool = True) -> list[Signal]:
        """`judge` one bucket end's buckets, then `learn` from them at once."""
        judged = self.judge(buckets)
        self.learn(judged, watched=learn)
        return judged.signals

    def judge(self, buckets: Sequence[Bucket], *, new_terms: bool = True) -> Judged:
        """The signals of one bucket end's buckets (each of a different series), in order,
        learning nothing yet: `learn` must follow before any other bucket end is judged. The
        pipeline makes the pages in between, so a close's pages do not wait for its learning.
        The negative-share tails of all of them are computed together (1,200 series in a few
        numpy blocks, not 1,200 calls), and every bucket is judged before any is learned from,
        so a term new to a brand is new to each of its series. With `new_terms` False none is
        looked for (no rule asks: 36,000 look-ups at each close of 200 brands); the terms
        are still learned, so a rule that asks later finds them known."""
        series = [self._detectors(bucket.series) for bucket in buckets]
        negatives = score_shares(
            [(d.negative, b.negative_count, b.count) for d, b in zip(series, buckets, strict=True)]
        )
        volumes = []
        signals = []
        for detectors, bucket, negative in zip(series, buckets, negatives, strict=True):
            judged = detectors.volume.judge(bucket.count, bucket.start)
            volumes.append(judged)
            volume = judged[3]
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
                    new_terms=detectors.new_terms(bucket) if new_terms else (),
                )
            )
        return Judged(signals, series, volumes)

    def learn(self, judged: Judged, *, watched: bool = True) -> None:
        """Learn from the buckets `judge` judged last. With `watched` False the baselines learn
        nothing from them (buckets of a time not wholly watched must not teach the detectors
        that it was quiet), but they count as recent: a surge in them still confirms and
        pages."""
        for detectors, signal, volume in zip(
            judged.series, judged.signals, judged.volumes, strict=True
        ):
            bucket = signal.bucket
            if watched:
                detectors.volume.learn_judged(bucket.count, volume)
                detectors.negative.learn_scored(
                    bucket.negative_count, bucket.count, signal.negative_score
                )
                detectors.learn(bucket, self._decay)
            else:
                detectors.volume.observe_judged(bucket.count, volume)
                detectors.observe(bucket)


@dataclass(frozen=True, slots=True)
class Judged:
    """One bucket end's signals, with what learning from their buckets needs."""

    signals: list[Signal]
    series: list[_SeriesDetectors]
    volumes: list[Judgement]
