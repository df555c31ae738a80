"""Event-time buckets per series, closed by a watermark so late mentions still count.

Every mention of a brand counts in the brand's roll-up series and in one series per topic it was
tagged with. A bucket closes when the watermark (the latest event time seen, less the allowed
lateness) passes its end; every known series closes it, so a quiet series reports a zero, which
the detectors need as much as a busy one. A mention whose bucket has ended by the watermark is
late: `add` refuses it (the pipeline counts it as late).
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left
from collections import _count_elements  # type: ignore[attr-defined]  # Counter's C loop
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from itertools import islice
from sys import intern
from typing import Any

import numpy as np

from crisiswatch.domain import ALL_TOPICS, Bucket, Ranked, ScoredMention, SeriesKey

STOPWORDS = frozenset(
    """the and for you your are was were with that this have has had not but all can just get got
    they them their what when where who why how its our out now one from about like been will
    would could should there here than then too very really some any more most much did does
    im amp http https www com rt via yes lol still even again ever into over after only
    because being also back know want need make made going today yesterday tomorrow""".split()
)
MAX_TERMS_PER_MENTION = 40
TOP_TERMS = 30  # terms kept per bucket: shown on pages, and watched for new ones
TERM_COUNTERS = 128  # per series-bucket: exact term counts up to this many distinct terms
AUTHOR_COUNTERS = 512  # per brand-bucket: exact per-author caps up to this many authors
_AUTHOR_SLOTS = 2 * AUTHOR_COUNTERS  # a power of two: `AuthorCounts`' table, never over half full
_AUTHOR_MASK = _AUTHOR_SLOTS - 1
AUTHOR_SAMPLE = 64  # per series-bucket: exact unique authors and reach up to this many
SOURCES_SAMPLED = 8  # per series-bucket: sources whose best complaint joins the samples
REACH_TOP = 8  # per series-bucket: the authors with most followers, whose reach is kept exactly
_HASH_SPACE = 1 << 64

_Key = tuple[str, str, str]  # (brand, topic, view): an open bucket's series, cheap to hash
_Sample = tuple[float, int, ScoredMention]  # (weight, -arrival, post): a min-heap entry


@dataclass(slots=True)
class _Accumulator:
    """One series' open bucket, filling up (plain dicts: counting is the hot path)."""

    count: int = 0
    raw_count: int = 0
    negative_count: int = 0
    # The authors of smallest hash, ascending, with the most followers each was seen with
    # (flat arrays: a busy bucket's thousands of series each hold one).
    sample_keys: array[int] = field(default_factory=lambda: array("Q"))
    sample_followers: array[int] = field(default_factory=lambda: array("Q"))
    sample_below: int = _HASH_SPACE  # hashes admitted to the sample: those up to this
    top: dict[int, int] = field(default_factory=dict)  # REACH_TOP biggest: hash -> followers
    top_floor: int = -1  # followers that get an author into `top` once it is full: above this
    sources: dict[str, int] = field(default_factory=dict)
    terms: dict[str, int] = field(default_factory=dict)
    samples: list[_Sample] = field(default_factory=list)
    brand_replies: int = 0
    brand_reply_negative: int = 0
    negative_sources: dict[str, int] = field(default_factory=dict)
    bursts: dict[str, int] = field(default_factory=dict)
    loudest: ScoredMention | None = None  # the negative post of the most-followed author
    # per source, its most representative negative post (Reddit's authors reach fewer than
    # X's, so a complaint cited on Reddit may have none among the samples)
    source_best: dict[str, _Sample] = field(default_factory=dict)

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        """Restore from a checkpoint (pickle's slots state), including one saved before
        `loudest` or `source_best` existed: they start empty."""
        self.loudest, self.source_best = None, {}
        for name, value in state[1].items():
            setattr(self, name, value)


def sample_weight(scored: ScoredMention) -> float:
    """How representative a post is of a crisis: negative posts from far-reaching authors first."""
    return (0.25 + scored.negative) * math.sqrt(1.0 + scored.mention.author_followers)


class Aggregator:
    """Counts scored mentions into event-time buckets and hands out the closed ones.

    Memory is bounded by time: only open buckets are held (at most the allowed lateness behind
    the newest), each with `samples_per_bucket` posts. Per-author state is bounded too, so a
    firehose-size bucket takes no more than a small one: the per-author cap (per brand and
    bucket, across its series) counts with `AUTHOR_COUNTERS` Misra–Gries counters (exact while
    the brand's bucket has no more authors than that; beyond, an author is capped once past
    `cap` plus the bucket's mentions over the counters, and never wrongly), and each series'
    unique authors and reach come from its `AUTHOR_SAMPLE` authors of smallest hash (exact up
    to that many, then a k-minimum-values estimate, about 13 % off). Term counts are exact up
    to `TERM_COUNTERS` distinct terms in a series' bucket; past that, a frequent-items sketch
    keeps the most frequent ones with counts that are never over the truth (a busy brand's
    vocabulary of thousands of words a bucket takes no more memory than a quiet one's).
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
        self._not_terms = _not_terms(brand_terms or {})
        self._open: dict[int, dict[_Key, _Accumulator]] = {}  # bucket index -> series
        self._counters: dict[int, dict[str, AuthorCounts]] = {}  # bucket index -> brand
        self._next_to_close: int | None = None
        self._watermark: datetime | None = None
        self._next_end = (-1, datetime.min)  # (a bucket index, the end of that bucket)
        self._sequence = 0  # tie-breaker for samples of equal weight: first come first

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint, where each brand's author counts are a dict (or from a
        copy, where they are tables)."""
        saved: dict[int, dict[str, dict[int, int] | AuthorCounts]] = state["_counters"]
        self.__dict__.update(state)
        self._counters = {
            index: {
                brand: counts if isinstance(counts, AuthorCounts) else AuthorCounts(counts)
                for brand, counts in by_brand.items()
            }
            for index, by_brand in saved.items()
        }

    def reconfigure(
        self, series: Iterable[SeriesKey], brand_terms: dict[str, frozenset[str]]
    ) -> None:
        """New series to close from now on (a reload); open buckets keep what they counted."""
        self._series = sorted(set(series))
        self._not_terms = _not_terms(brand_terms)

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
            if self._ended(index):
                return False
            self._next_to_close = index  # nothing closed after it: it opens as the oldest
        series = self._open.get(index)
        if series is None:
            series = self._open[index] = {}
            self._counters[index] = {}
        brand, topics = scored.brand, (ALL_TOPICS, *scored.topics)
        author = mention.author or mention.id
        author_hash = author_key(author)
        if self._over_cap(self._counters[index], brand, author_hash):
            for view in views:  # one author's burst (spam, a bot) must not make volume
                for topic in topics:
                    _accumulator(series, (brand, topic, view)).raw_count += 1
            return True
        terms = self._terms(brand, tokens)
        burst_sets = tuple(bursts)
        self._sequence += 1
        sample = (sample_weight(scored), -self._sequence, scored)
        followers, source = mention.author_followers, mention.source
        negative = scored.is_negative
        samples = self._samples
        # Every series the mention counts in gets the same tallies. This loop is the hottest
        # in the daemon, so the tallies are written out here rather than called per series.
        for view in views:
            for topic in topics:
                acc = _accumulator(series, (brand, topic, view))
                acc.raw_count += 1
                acc.count += 1
                if author_hash <= acc.sample_below:
                    _sample_author(acc, author_hash, followers)
                if followers > acc.top_floor:
                    _top_author(acc, author_hash, followers)
                counts = acc.sources
                counts[source] = counts.get(source, 0) + 1
                if negative:
                    acc.negative_count += 1
                    counts = acc.negative_sources
                    counts[source] = counts.get(source, 0) + 1
                    loudest = acc.loudest
                    if loudest is None or followers > loudest.mention.author_followers:
                        acc.loudest = scored
                    best = acc.source_best.get(source)
                    if best is None:
                        if len(acc.source_best) < SOURCES_SAMPLED:
                            acc.source_best[source] = sample
                    elif sample > best:
                        acc.source_best[source] = sample
                if scored.replies_to_brand:
                    acc.brand_replies += 1
                    acc.brand_reply_negative += negative
                counts = acc.terms
                _count_elements(counts, terms)  # each term +1, in C (Counter.update's loop)
                if len(counts) > TERM_COUNTERS:
                    acc.terms = _purge_terms(counts)
                for term_set in burst_sets:
                    acc.bursts[term_set] = acc.bursts.get(term_set, 0) + 1
                if len(acc.samples) < samples:
                    heapq.heappush(acc.samples, sample)
                else:
                    heapq.heappushpop(acc.samples, sample)
        return True

    def _terms(self, brand: str, tokens: Iterable[str]) -> dict[str, None]:
        """The post's terms once each, in the order written (so ties rank the same every run).

        Interned: a word counted in a thousand series' buckets and remembered as known is then
        one string, not one per post it was first counted from (200 brands' firehose held
        219 MB rather than 226 MB by its first close)."""
        skip = self._not_terms.get(brand, STOPWORDS)
        kept = [intern(t) for t in tokens if len(t) > 2 and t not in skip and not t.isdigit()]
        terms = dict.fromkeys(kept)
        if len(terms) > MAX_TERMS_PER_MENTION:
            terms = dict.fromkeys(islice(terms, MAX_TERMS_PER_MENTION))
        return terms

    def _ended(self, index: int) -> bool:
        """Whether the bucket `index` has ended (by the watermark), so may have been closed.
        One before the oldest open bucket that has not (the first mentions of a stream came
        out of order, or a live start holds closes while a source catches up) is still open."""
        return self._watermark is not None and index < self.index_of(self._watermark)

    def move_watermark(self, moment: datetime) -> bool:
        """Move the watermark to `moment` less the lateness (never back); whether that ended
        the oldest open bucket (cheap: asked for every mention; `close_ended` then closes)."""
        watermark = moment - self._lateness
        if self._watermark is not None and watermark <= self._watermark:
            return False
        self._watermark = watermark
        index = self._next_to_close
        if index is None:
            return False
        if self._next_end[0] != index:
            self._next_end = (index, self.start_of(index + 1))
        return watermark >= self._next_end[1]  # usually not: the oldest bucket is still open

    def close_ended(
        self, most: int | None = None, unseen_until: datetime | None = None
    ) -> list[Bucket]:
        """Close the buckets that have ended by the watermark, the oldest first: every one, or
        the `most` oldest bucket ends (`ended` then says whether more are left). A bucket that
        no mention came into and that ends by `unseen_until` is passed over, not closed: a
        bucket of a time nothing watched (the daemon was down) is unknown, not quiet, so no
        zero is judged or learned for it."""
        index, watermark = self._next_to_close, self._watermark
        if index is None or watermark is None:
            return []
        closed: list[Bucket] = []
        limit = self.index_of(watermark)  # buckets below this index have ended
        unseen_limit = -1 if unseen_until is None else self.index_of(unseen_until)
        while index < limit and most != 0:
            if index >= unseen_limit or index in self._open:  # ends after it, or seen
                closed.extend(self._close(index))
                most = None if most is None else most - 1
            index += 1
        self._next_to_close = index
        return closed

    @property
    def next_to_close(self) -> int | None:
        """The index of the oldest bucket not closed (nor passed over) yet."""
        return self._next_to_close

    @property
    def ended(self) -> bool:
        """Whether a bucket has ended by the watermark and is not closed yet."""
        index, watermark = self._next_to_close, self._watermark
        return index is not None and watermark is not None and index < self.index_of(watermark)

    def advance(self, moment: datetime) -> list[Bucket]:
        """Move the watermark to `moment` less the lateness; return the buckets that closed."""
        return self.close_ended() if self.move_watermark(moment) else []

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

    def _over_cap(self, by_brand: dict[str, AuthorCounts], brand: str, author: int) -> bool:
        """Count the author's mention in the brand's bucket: True once past the cap."""
        counts = by_brand.get(brand)
        if counts is None:
            counts = by_brand[brand] = AuthorCounts()
        return counts.add(author) >= self._cap

    def _close(self, index: int) -> list[Bucket]:
        series = self._open.pop(index, {})
        self._counters.pop(index, None)
        start = self.start_of(index)
        end = start + timedelta(seconds=self._width)
        # Each series' counts are let go of as its bucket is built, so a busy close does not
        # hold both at once (memory's peak is at closes, with the next bucket already filling);
        # only its terms and sources stay, in the bucket's `Ranked`, until first read.
        return [
            _bucket(key, start, end, series.pop((key.brand, key.topic, key.view), None))
            for key in self._series
        ]


def _accumulator(series: dict[_Key, _Accumulator], key: _Key) -> _Accumulator:
    acc = series.get(key)
    if acc is None:
        acc = series[key] = _Accumulator()
    return acc


def _purge_terms(counts: dict[str, int]) -> dict[str, int]:
    """Term counters grown past `TERM_COUNTERS` (by a post's new terms) make room: every count
    goes down by the median count, and the terms at or below it are let go (a frequent-items
    sketch: at least half the counters lose the median each time, so a term's count is short
    of the truth by at most 2 N / TERM_COUNTERS for N terms counted, and never over it; the
    cost of a purge is spread over the many new terms it makes room for)."""
    median = sorted(counts.values())[len(counts) // 2]
    return {term: seen - median for term, seen in counts.items() if seen > median}


class AuthorCounts:
    """Misra–Gries counts of the authors of one brand's bucket: `AUTHOR_COUNTERS` counters,
    exact while the bucket has no more authors than that. A new author who finds every counter
    taken takes one off each (its own mention is spent on that), so no author's count is ever
    over its true count, and short of it by at most the bucket's mentions over the counters.

    The counters are two flat arrays, an open-addressing table (linear probing, at most half
    full) of authors' hashes and their counts: 13 KB a brand, where a dict of 512 authors took
    37 KB with its int keys. Each brand's bucket holds one, and two buckets are open at every
    close, so at 200 brands the dicts were 15 MB of a close's peak memory, the tables are 5.
    Pickled, it is the plain dict of author to count that it once was, so a checkpoint reads
    in either release (`Aggregator.__setstate__` turns it back). An author whose hash is 0
    counts as 1 (0 marks an empty slot): one more pair of authors in 2^64 that count as one,
    as any two with the same hash do."""

    __slots__ = ("_counts", "_free", "_keys")

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        """Empty, or holding `counts` (restored from a checkpoint). Should they be more than
        `AUTHOR_COUNTERS` (a release with more counters saved them), they are cut down as
        Misra–Gries would: the count after the last one kept is taken off each."""
        self._empty()
        held: dict[int, int] = {}
        for author, seen in (counts or {}).items():
            key = author or 1  # 0 marks an empty slot
            if seen > 0:
                held[key] = max(seen, held.get(key, 0))
        if len(held) > AUTHOR_COUNTERS:
            cut = sorted(held.values(), reverse=True)[AUTHOR_COUNTERS]
            held = {author: seen - cut for author, seen in held.items() if seen > cut}
        for author, seen in held.items():
            self._put(author, seen)

    def _empty(self) -> None:
        self._keys = array("Q", bytes(8 * _AUTHOR_SLOTS))  # an author's hash by slot; 0: empty
        self._counts = array("I", bytes(4 * _AUTHOR_SLOTS))
        self._free = AUTHOR_COUNTERS  # counters not taken

    def __len__(self) -> int:
        return AUTHOR_COUNTERS - self._free

    def __reduce__(self) -> tuple[type[dict[int, int]], tuple[dict[int, int]]]:
        counts = dict(zip(self._keys, self._counts, strict=True))
        counts.pop(0, None)  # the empty slots
        return (dict, (counts,))

    def add(self, author: int) -> int:
        """Count a mention by `author` (its hash); the count it had before (0 when new). Once
        per mention: the probe is written out here rather than shared with `_put`."""
        author = author or 1  # 0 marks an empty slot
        keys = self._keys
        slot = author & _AUTHOR_MASK
        while (held := keys[slot]) != 0:
            if held == author:
                counts = self._counts
                seen = counts[slot]
                counts[slot] = seen + 1  # below 2^32: at most the brand's mentions in a bucket
                return seen
            slot = (slot + 1) & _AUTHOR_MASK
        if self._free > 0:
            keys[slot] = author
            self._counts[slot] = 1
            self._free -= 1
        else:
            self._one_less_each()
        return 0

    def _put(self, author: int, seen: int) -> None:
        keys, slot = self._keys, author & _AUTHOR_MASK
        while keys[slot] != 0:
            slot = (slot + 1) & _AUTHOR_MASK
        keys[slot] = author
        self._counts[slot] = seen
        self._free -= 1

    def _one_less_each(self) -> None:
        """Every counter goes down by one, and those at zero are let go: the survivors (few,
        when most authors post once) go into a new table, as linear probing cannot simply
        empty a slot. Found with numpy: a Python loop over the 1,024 slots, once every few
        hundred new authors, was a third of the cost of counting."""
        counts = np.frombuffer(self._counts, dtype=np.uint32)
        kept = counts > 1
        authors = np.frombuffer(self._keys, dtype=np.uint64)[kept].tolist()
        seen = (counts[kept] - 1).tolist()
        self._empty()
        for author, left in zip(authors, seen, strict=True):
            self._put(author, left)


def _sample_author(acc: _Accumulator, author_hash: int, followers: int) -> None:
    """Keep the author among the `AUTHOR_SAMPLE` smallest hashes, with its most followers."""
    keys, most = acc.sample_keys, acc.sample_followers
    at = bisect_left(keys, author_hash)
    followers = min(followers, _HASH_SPACE - 1)  # an array slot's limit (no real account's)
    if at < len(keys) and keys[at] == author_hash:
        most[at] = max(most[at], followers)
        return
    keys.insert(at, author_hash)
    most.insert(at, followers)
    if len(keys) > AUTHOR_SAMPLE:
        keys.pop()
        most.pop()
        acc.sample_below = keys[-1]


def author_key(author: str) -> int:
    """A 64-bit hash of an author, the same in every process (Python's `hash` is seeded per
    process): replays give the same counts, and a restored bucket knows its authors again."""
    return int.from_bytes(blake2b(author.encode("utf-8", "surrogatepass"), digest_size=8).digest())


def _top_author(acc: _Accumulator, author_hash: int, followers: int) -> None:
    """Keep the author among the `REACH_TOP` with most followers (reach is heavy-tailed: one
    celebrity can outweigh thousands of others, so the biggest are summed, not estimated)."""
    top = acc.top
    if top.get(author_hash, -1) >= followers:
        return
    top[author_hash] = followers
    if len(top) > REACH_TOP:
        del top[min(top, key=top.__getitem__)]
    if len(top) == REACH_TOP:
        acc.top_floor = min(top.values())


def _not_terms(brand_terms: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Per brand, the words that are never a bucket's terms: stopwords and the brand's names."""
    return {brand: STOPWORDS | own for brand, own in brand_terms.items()}


def _authors_and_reach(acc: _Accumulator) -> tuple[int, int, bool]:
    """Unique authors and the sum of their followers: exact while the author sample holds
    every author; past that, a k-minimum-values estimate of the authors (about 13 % off, kept
    between the sample's size and the mentions counted), and reach as the biggest authors'
    followers exactly plus the others' estimated from the sample."""
    keys, followers = acc.sample_keys, acc.sample_followers
    if acc.sample_below == _HASH_SPACE:
        return len(keys), sum(followers), True
    estimate = (AUTHOR_SAMPLE - 1) * _HASH_SPACE / acc.sample_below
    unique = min(max(round(estimate), AUTHOR_SAMPLE + 1), acc.count)
    top, below = acc.top, acc.sample_below
    others, others_sum = len(keys), sum(followers)
    for author in top:  # the few biggest accounts the sample holds are summed exactly instead
        if author > below:
            continue  # not in the sample (most are not: it holds the smallest hashes)
        at = bisect_left(keys, author)
        if at < len(keys) and keys[at] == author:
            others, others_sum = others - 1, others_sum - followers[at]
    rest = others_sum / others * max(unique - len(top), 0) if others else 0.0
    return unique, sum(top.values()) + round(rest), False


def _bucket(key: SeriesKey, start: datetime, end: datetime, acc: _Accumulator | None) -> Bucket:
    if acc is None:
        return Bucket(key, start, end, 0, 0, 0, 0, 0, (), (), ())
    samples = tuple(entry[2] for entry in sorted(acc.samples, reverse=True))
    # the most-followed complaint (seen by high_reach_negative, and always shown) and each
    # source's best complaint join the samples, if the reach-weighted ranking left them out
    extra = [best[2] for best in sorted(acc.source_best.values(), reverse=True)]
    if acc.loudest is not None:
        extra.append(acc.loudest)
    kept = {id(post) for post in samples}
    for post in extra:
        if id(post) not in kept:
            kept.add(id(post))
            samples = (*samples, post)
    unique, reach, exact = _authors_and_reach(acc)
    return Bucket(
        series=key,
        start=start,
        end=end,
        count=acc.count,
        raw_count=acc.raw_count,
        negative_count=acc.negative_count,
        unique_authors=unique,
        reach=reach,
        sources=Ranked(acc.sources),
        top_terms=Ranked(acc.terms, TOP_TERMS),
        samples=samples,
        brand_replies=acc.brand_replies,
        brand_reply_negative=acc.brand_reply_negative,
        negative_sources=Ranked(acc.negative_sources),
        bursts=tuple(sorted(acc.bursts.items())),
        exact_reach=exact,
    )
