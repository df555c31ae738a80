"""Event-time buckets per series, closed by a watermark so late mentions still count.

Every mention of a brand counts in the brand's roll-up series and in one series per topic it was
tagged with. A bucket closes when the watermark (the latest event time seen, less the allowed
lateness) passes its end; every known series closes it, so a quiet series reports a zero, which
the detectors need as much as a busy one. A mention older than the oldest open bucket is late:
it is counted and dropped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter

from crisiswatch.domain import ALL_TOPICS, Bucket, ScoredMention, SeriesKey

STOPWORDS = frozenset(
    """the and for you your are was were with that this have has had not but all can just get got
    they them their what when where who why how its our out now one from about like been will
    would could should there here than then too very really some any more most much did does
    im amp http https www com rt via yes lol still even again ever into over after only
    because being also back know want need make made going today yesterday tomorrow""".split()
)
MAX_TERMS_PER_MENTION = 40
TOP_TERMS = 30  # terms kept per bucket: shown on pages, and watched for new ones

_Key = tuple[str, str, str]  # (brand, topic, view): an open bucket's series, cheap to hash
_Sample = tuple[float, int, ScoredMention]  # (weight, -arrival, post): a min-heap entry


@dataclass(slots=True)
class _Accumulator:
    """One series' open bucket, filling up (plain dicts: counting is the hot path)."""

    count: int = 0
    raw_count: int = 0
    negative_count: int = 0
    authors: dict[str, int] = field(default_factory=dict)
    followers: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    terms: dict[str, int] = field(default_factory=dict)
    samples: list[_Sample] = field(default_factory=list)
    brand_replies: int = 0
    brand_reply_negative: int = 0
    negative_sources: dict[str, int] = field(default_factory=dict)
    bursts: dict[str, int] = field(default_factory=dict)


def sample_weight(scored: ScoredMention) -> float:
    """How representative a post is of a crisis: negative posts from far-reaching authors first."""
    return (0.25 + scored.negative) * math.sqrt(1.0 + scored.mention.author_followers)


class Aggregator:
    """Counts scored mentions into event-time buckets and hands out the closed ones.

    Memory is bounded by time: only open buckets are held (at most the allowed lateness behind
    the newest), each with `samples_per_bucket` posts; its authors and term counts are exact, so
    they grow with the mentions a bucket holds (a term that is rare early in a bucket may be the
    emerging one by its end, so none is dropped).
    """

    def __init__(
        self,
        series: Iterable[SeriesKey],
        *,
        bucket: timedelta,
        allowed_lateness: timedelta,
        per_author_cap: int,
        samples_per_bucket: int,
        brand_terms: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self._series = sorted(set(series))
        self._width = int(bucket.total_seconds())
        self._lateness = allowed_lateness
        self._cap = per_author_cap
        self._samples = samples_per_bucket
        self._brand_terms = brand_terms or {}
        self._open: dict[int, dict[_Key, _Accumulator]] = {}  # bucket index -> series
        self._next_to_close: int | None = None
        self._watermark: datetime | None = None
        self._next_end = (-1, datetime.min)  # (a bucket index, the end of that bucket)
        self._sequence = 0  # tie-breaker for samples of equal weight: first come first
        self.late = 0

    def reconfigure(
        self, series: Iterable[SeriesKey], brand_terms: dict[str, frozenset[str]]
    ) -> None:
        """New series to close from now on (a reload); open buckets keep what they counted."""
        self._series = sorted(set(series))
        self._brand_terms = brand_terms

    @property
    def watermark(self) -> datetime | None:
        return self._watermark

    def index_of(self, moment: datetime) -> int:
        return int(moment.timestamp()) // self._width

    def start_of(self, index: int) -> datetime:
        return datetime.fromtimestamp(index * self._width, tz=UTC)

    def add(
        self,
        scored: ScoredMention,
        tokens: Iterable[str],
        views: Iterable[str] = ("",),
        bursts: Iterable[str] = (),
    ) -> bool:
        """Count one mention into its bucket in each of its views; False if it came too late.

        `bursts` names the watched term sets whose terms the mention contains.
        """
        mention = scored.mention
        index = self.index_of(mention.created_at)
        if self._next_to_close is None:
            self._next_to_close = index
        elif index < self._next_to_close:
            self.late += 1
            return False
        series = self._open.get(index)
        if series is None:
            series = self._open[index] = {}
        terms = self._terms(scored.brand, tokens)
        burst_sets = tuple(bursts)
        self._sequence += 1
        sample = (sample_weight(scored), -self._sequence, scored)
        author = mention.author or mention.id
        brand, topics = scored.brand, (ALL_TOPICS, *scored.topics)
        for view in views:
            for topic in topics:
                key = (brand, topic, view)
                acc = series.get(key)
                if acc is None:
                    acc = series[key] = _Accumulator()
                self._count(acc, scored, author, terms, burst_sets, sample)
        return True

    def _terms(self, brand: str, tokens: Iterable[str]) -> dict[str, None]:
        """The post's terms once each, in the order written (so ties rank the same every run)."""
        own = self._brand_terms.get(brand, frozenset())
        terms: dict[str, None] = {}
        for token in tokens:
            if (
                len(token) > 2
                and token not in STOPWORDS
                and token not in own
                and not token.isdigit()
            ):
                terms[token] = None
                if len(terms) >= MAX_TERMS_PER_MENTION:
                    break
        return terms

    def _count(
        self,
        acc: _Accumulator,
        scored: ScoredMention,
        author: str,
        terms: dict[str, None],
        bursts: tuple[str, ...],
        sample: _Sample,
    ) -> None:
        acc.raw_count += 1
        authors = acc.authors
        seen = authors[author] = authors.get(author, 0) + 1
        if seen > self._cap:
            return  # one author's burst (spam, a bot) must not make volume
        mention = scored.mention
        negative = scored.is_negative
        acc.count += 1
        acc.negative_count += negative
        followers = acc.followers
        if followers.get(author, -1) < mention.author_followers:
            followers[author] = mention.author_followers
        _tally(acc.sources, (mention.source,))
        if negative:
            _tally(acc.negative_sources, (mention.source,))
        if scored.replies_to_brand:
            acc.brand_replies += 1
            acc.brand_reply_negative += negative
        _tally(acc.terms, terms)
        if bursts:
            _tally(acc.bursts, bursts)
        if len(acc.samples) < self._samples:
            heapq.heappush(acc.samples, sample)
        else:
            heapq.heappushpop(acc.samples, sample)

    def advance(self, moment: datetime) -> list[Bucket]:
        """Move the watermark to `moment` less the lateness; return the buckets that closed."""
        watermark = moment - self._lateness
        if self._watermark is not None and watermark <= self._watermark:
            return []
        self._watermark = watermark
        if self._next_to_close is None:
            return []
        if self._next_end[0] != self._next_to_close:
            self._next_end = (self._next_to_close, self.start_of(self._next_to_close + 1))
        if watermark < self._next_end[1]:
            return []  # the usual case: the oldest open bucket has not ended
        closed: list[Bucket] = []
        limit = self.index_of(watermark)  # buckets below this index have ended
        while self._next_to_close < limit:
            closed.extend(self._close(self._next_to_close))
            self._next_to_close += 1
        return closed

    def flush(self) -> list[Bucket]:
        """Close every open bucket (at the end of a replay)."""
        if not self._open:
            return []
        last = max(self._open)
        closed: list[Bucket] = []
        while self._next_to_close is not None and self._next_to_close <= last:
            closed.extend(self._close(self._next_to_close))
            self._next_to_close += 1
        return closed

    def _close(self, index: int) -> list[Bucket]:
        series = self._open.pop(index, {})
        start = self.start_of(index)
        end = start + timedelta(seconds=self._width)
        return [
            _bucket(key, start, end, series.get((key.brand, key.topic, key.view)))
            for key in self._series
        ]


def _tally(counts: dict[str, int], items: Iterable[str]) -> None:
    for item in items:
        counts[item] = counts.get(item, 0) + 1


def _most_common(counts: dict[str, int], n: int | None = None) -> list[tuple[str, int]]:
    """Most first, ties in the order first counted (as `Counter.most_common`)."""
    if n is None:
        return sorted(counts.items(), key=itemgetter(1), reverse=True)
    return heapq.nlargest(n, counts.items(), key=itemgetter(1))


def _bucket(key: SeriesKey, start: datetime, end: datetime, acc: _Accumulator | None) -> Bucket:
    if acc is None:
        return Bucket(key, start, end, 0, 0, 0, 0, 0, (), (), ())
    samples = tuple(entry[2] for entry in sorted(acc.samples, reverse=True))
    return Bucket(
        series=key,
        start=start,
        end=end,
        count=acc.count,
        raw_count=acc.raw_count,
        negative_count=acc.negative_count,
        unique_authors=len(acc.authors),
        reach=sum(acc.followers.values()),
        sources=tuple(_most_common(acc.sources)),
        top_terms=tuple(_most_common(acc.terms, TOP_TERMS)),
        samples=samples,
        brand_replies=acc.brand_replies,
        brand_reply_negative=acc.brand_reply_negative,
        negative_sources=tuple(_most_common(acc.negative_sources)),
        bursts=tuple(sorted(acc.bursts.items())),
    )
