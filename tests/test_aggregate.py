"""Event-time buckets per series, closed by the watermark."""

from __future__ import annotations

import copy
import os
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from crisiswatch.aggregate import (
    AUTHOR_COUNTERS,
    AUTHOR_SAMPLE,
    MAX_TERMS_PER_MENTION,
    STOPWORDS,
    TERM_COUNTERS,
    TOP_TERMS,
    Aggregator,
    AuthorCounts,
    author_key,
    sample_weight,
)
from crisiswatch.domain import ALL_TOPICS, Bucket, Mention, Ranked, ScoredMention, SeriesKey
from crisiswatch.enrich.attribution import tokenize

MentionFactory = Callable[..., Mention]

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ALL = SeriesKey("kestrel", ALL_TOPICS)
CARDS = SeriesKey("kestrel", "cards")
APP = SeriesKey("kestrel", "app")
SERIES = (ALL, CARDS, APP)
OWN_TERMS = frozenset({"kestrel", "bank", "kestrelbank", "#kestrelbank"})


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Feeder:
    """Feeds mentions to an aggregator as the pipeline does: add, then advance to its time."""

    def __init__(self, aggregator: Aggregator, make_mention: MentionFactory) -> None:
        self.aggregator = aggregator
        self.make_mention = make_mention
        self.sequence = 0
        self.late = 0  # mentions the aggregator refused as too late

    def scored(
        self,
        minutes: float,
        *,
        topics: tuple[str, ...] = (),
        negative: float = 0.1,
        **fields: object,
    ) -> ScoredMention:
        self.sequence += 1
        fields.setdefault("id", f"x:{self.sequence}")
        fields.setdefault("author", f"author{self.sequence}")
        mention = self.make_mention(created_at=at(minutes), **fields)
        return ScoredMention(mention, "kestrel", topics, negative)

    def add(self, minutes: float, **kwargs: object) -> ScoredMention:
        """Count a mention without moving the watermark."""
        scored = self.scored(minutes, **kwargs)  # type: ignore[arg-type]
        if not self.aggregator.add(scored, tokenize(scored.mention.text)):
            self.late += 1
        return scored

    def feed(self, minutes: float, **kwargs: object) -> list[Bucket]:
        scored = self.add(minutes, **kwargs)
        return self.aggregator.advance(scored.mention.created_at)


def make_aggregator(**overrides: object) -> Aggregator:
    options: dict[str, object] = {
        "bucket": timedelta(minutes=5),
        "allowed_lateness": timedelta(minutes=2),
        "per_author_cap": 3,
        "samples_per_bucket": 5,
        "brand_terms": {"kestrel": OWN_TERMS},
    }
    options.update(overrides)
    return Aggregator(SERIES, **options)  # type: ignore[arg-type]


def one(buckets: list[Bucket], series: SeriesKey, start: datetime | None = None) -> Bucket:
    (found,) = [b for b in buckets if b.series == series and start in (None, b.start)]
    return found


@pytest.fixture
def feeder(make_mention: MentionFactory) -> Feeder:
    return Feeder(make_aggregator(), make_mention)


class TestAggregator:
    def test_bucket_closes_when_watermark_passes_its_end(self, feeder: Feeder) -> None:
        """A bucket closes once the latest event time less the lateness reaches its end."""
        assert feeder.feed(0.5) == []
        assert feeder.feed(4.9) == []
        assert feeder.feed(6.9) == []  # watermark 12:04:54, before the end at 12:05
        closed = feeder.feed(7)  # watermark 12:05: the 12:00 bucket has ended
        assert {b.series for b in closed} == set(SERIES)
        bucket = one(closed, ALL)
        assert (bucket.start, bucket.end) == (at(0), at(5))
        assert bucket.count == 2
        assert feeder.aggregator.watermark == at(5)

    def test_buckets_are_aligned_to_their_size(self, feeder: Feeder) -> None:
        """A bucket starts on a multiple of its width, not at the first mention."""
        feeder.feed(3.2)
        bucket = one(feeder.aggregator.flush(), ALL)
        assert (bucket.start, bucket.end) == (at(0), at(5))

    def test_closes_a_few_bucket_ends_at_a_time_when_asked(self, feeder: Feeder) -> None:
        """`most` closes only the oldest bucket ends, and `ended` says more are left, so a
        caller can close a long gap over many turns; every bucket closes in the end, in order."""
        feeder.add(1)
        aggregator = feeder.aggregator
        aggregator.move_watermark(at(62))  # 12 bucket ends behind (12:00 to 12:55)
        starts = []
        while aggregator.ended:
            closed = aggregator.close_ended(most=5)
            assert len({b.start for b in closed}) <= 5
            starts += sorted({b.start for b in closed})
        assert starts == [at(5 * k) for k in range(12)]
        assert aggregator.close_ended(most=5) == []

    def test_unseen_buckets_up_to_a_moment_are_passed_over_not_closed(self, feeder: Feeder) -> None:
        """Buckets that no mention came into and that end by `unseen_until` (a downtime) are
        passed over; one a mention came into closes, and so do empty ones ending after it."""
        feeder.add(1)
        feeder.add(21)  # 12:20: a mention in the downtime (a source caught up on it)
        aggregator = feeder.aggregator
        aggregator.move_watermark(at(42))  # the 12:00 to 12:35 buckets have ended
        closed = aggregator.close_ended(unseen_until=at(30))
        assert sorted({b.start for b in closed}) == [at(0), at(20), at(30), at(35)]
        assert one(closed, ALL, at(20)).count == 1 and one(closed, ALL, at(35)).count == 0

    def test_late_mention_within_lateness_counts(self, feeder: Feeder) -> None:
        """A mention up to the allowed lateness behind the latest one still counts."""
        feeder.feed(1)
        feeder.feed(6)  # watermark 12:04: the 12:00 bucket is still open
        assert feeder.feed(4.5) == []
        closed = feeder.feed(8)
        assert one(closed, ALL, at(0)).count == 2
        assert feeder.late == 0

    def test_an_older_first_mention_within_lateness_opens_an_earlier_bucket(
        self, feeder: Feeder
    ) -> None:
        """The stream's first mentions out of order: one from the bucket before the first
        mention's, within the lateness, counts there (it had been late: no bucket before the
        first mention's was open)."""
        feeder.feed(6)  # watermark 12:04: the 12:00 bucket has not ended
        assert feeder.feed(4.5) == []
        closed = feeder.feed(8)  # watermark 12:06: the 12:00 bucket closes with it
        assert one(closed, ALL, at(0)).count == 1
        assert feeder.late == 0
        assert one(feeder.aggregator.flush(), ALL, at(5)).count == 2

    def test_too_late_mention_is_counted_and_dropped(self, feeder: Feeder) -> None:
        """A mention older than the oldest open bucket is counted in `late`, not in a bucket."""
        feeder.feed(1)
        assert one(feeder.feed(8), ALL, at(0)).count == 1
        assert feeder.feed(4) == []
        assert feeder.late == 1
        rest = feeder.aggregator.flush()
        assert [b.start for b in rest if b.series == ALL] == [at(5)]
        assert one(rest, ALL).count == 1  # only the 12:08 mention

    def test_every_series_reports_on_every_close(self, feeder: Feeder) -> None:
        """Quiet series get a zero bucket, including across a gap of empty buckets."""
        feeder.feed(1, topics=("cards",))
        closed = feeder.feed(32)  # watermark 12:30: buckets 12:00 to 12:25 have ended
        starts = sorted({b.start for b in closed})
        assert starts == [at(m) for m in range(0, 30, 5)]
        assert len(closed) == len(starts) * len(SERIES)
        assert one(closed, CARDS, at(0)).count == 1
        app = one(closed, APP, at(0))
        assert (app.count, app.raw_count, app.unique_authors, app.samples) == (0, 0, 0, ())
        for start in starts[1:]:
            for key in SERIES:
                assert one(closed, key, start).count == 0
        for bucket in closed:
            assert bucket.end - bucket.start == timedelta(minutes=5)

    def test_closed_buckets_come_in_time_order(self, feeder: Feeder) -> None:
        """Closed buckets are handed out oldest first."""
        feeder.feed(1)
        closed = feeder.feed(22)
        assert [b.start for b in closed] == sorted(b.start for b in closed)

    def test_topic_mention_counts_in_rollup_and_topic(self, feeder: Feeder) -> None:
        """A topic mention counts in the brand roll-up and in each of its topics only."""
        feeder.feed(1, topics=("cards",))
        feeder.feed(2, topics=("cards", "app"))
        feeder.feed(3)
        closed = feeder.aggregator.flush()
        assert one(closed, ALL).count == 3
        assert one(closed, CARDS).count == 2
        assert one(closed, APP).count == 1

    def test_per_author_cap(self, feeder: Feeder) -> None:
        """One author's 50 posts count per_author_cap toward count but all toward raw_count."""
        for second in range(50):
            feeder.feed(1 + second / 60, author="spammer", negative=0.9)
        feeder.feed(2, author="bob")
        feeder.feed(2.5, author="carol")
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.count == 3 + 2
        assert bucket.raw_count == 52
        assert bucket.negative_count == 3
        assert bucket.unique_authors == 3
        assert bucket.negative_share == pytest.approx(3 / 5)

    def test_the_cap_is_per_brand_across_its_topics(self, feeder: Feeder) -> None:
        """An author's mentions past the cap count in none of the brand's series, whichever
        topic they are about; they still count as raw mentions."""
        for minutes, topic in ((1, "cards"), (1.5, "cards"), (2, "app"), (2.5, "app")):
            feeder.feed(minutes, author="dave", topics=(topic,))
        closed = feeder.aggregator.flush()
        assert one(closed, ALL).count == 3
        assert (one(closed, CARDS).count, one(closed, APP).count) == (2, 1)
        assert (one(closed, APP).raw_count, one(closed, ALL).raw_count) == (2, 4)

    def test_an_absurd_follower_count_is_held_not_fatal(self, feeder: Feeder) -> None:
        """A follower count past 64 bits (hostile input) is held at the most a slot takes."""
        feeder.feed(1, author="huge", author_followers=2**70)
        assert one(feeder.aggregator.flush(), ALL).reach == 2**64 - 1

    def test_a_celebrity_reach_is_not_lost_to_the_sample(self, feeder: Feeder) -> None:
        """Past the author sample, reach keeps the biggest accounts exactly and estimates the
        rest: one 10-million-follower author among 2,000 ordinary ones is neither dropped nor
        multiplied."""
        rng = random.Random(3)
        followers = [rng.randint(50, 950) for _ in range(2_000)]
        for n, count in enumerate(followers):
            feeder.add(1, author=f"u{n}", author_followers=count)
        feeder.add(1, author="celebrity", author_followers=10_000_000)
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.reach == pytest.approx(10_000_000 + sum(followers), rel=0.05)

    def test_estimates_stay_within_what_was_seen(self, feeder: Feeder) -> None:
        """Just past the sample's size, the author estimate is neither below the authors the
        sample has already proved nor above the mentions counted."""
        for n in range(AUTHOR_SAMPLE + 1):
            feeder.add(1, author=f"a{n}")
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.unique_authors == AUTHOR_SAMPLE + 1 and not bucket.exact_reach

    def test_anonymous_mentions_count_by_id(self, feeder: Feeder) -> None:
        """Mentions without an author are not capped together."""
        for n in range(6):
            feeder.feed(1, author=None, id=f"anon:{n}")
        assert one(feeder.aggregator.flush(), ALL).count == 6

    def test_reach_and_sources(self, feeder: Feeder) -> None:
        """Reach sums each author's followers once; sources are counted, most first."""
        feeder.feed(1, author="a", author_followers=100, source="x")
        feeder.feed(2, author="a", author_followers=150, source="reddit")
        feeder.feed(3, author="b", author_followers=1_000, source="reddit")
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.reach == 150 + 1_000
        assert bucket.sources == (("reddit", 2), ("x", 1))

    def test_author_counts_are_exact_up_to_their_bounds(self, feeder: Feeder) -> None:
        """Up to AUTHOR_SAMPLE authors, unique authors and reach are exact; up to
        AUTHOR_COUNTERS, so is the cap (each author here posts cap + 1 times)."""
        for n in range(AUTHOR_SAMPLE):
            for _ in range(4):
                feeder.add(1, author=f"a{n}", author_followers=n)
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.unique_authors == AUTHOR_SAMPLE and bucket.exact_reach
        assert bucket.reach == sum(range(AUTHOR_SAMPLE))
        assert (bucket.count, bucket.raw_count) == (3 * AUTHOR_SAMPLE, 4 * AUTHOR_SAMPLE)

    def test_a_busy_bucket_holds_bounded_author_state(self, make_mention: MentionFactory) -> None:
        """Thousands of authors a bucket: per-author state stays within its bounds, the unique
        authors and reach estimates are close, and the cap still stops a bot, while no
        one-post author is ever capped."""
        aggregator = make_aggregator()
        feeder = Feeder(aggregator, make_mention)
        authors, posts_by_bot, estimates = 3_000, 600, []
        for minute in range(20):  # twenty buckets, each its own hash sample of the authors
            for n in range(authors):
                feeder.add(minute * 5 + 1, author=f"u{minute}-{n}", author_followers=10)
                if n % 5 == 0:
                    feeder.add(minute * 5 + 1, author="bot", author_followers=10)
            index = max(aggregator._open)
            series = aggregator._open[index][(ALL.brand, ALL.topic, ALL.view)]
            assert len(aggregator._counters[index]["kestrel"]) <= AUTHOR_COUNTERS
            assert len(series.sample_keys) <= AUTHOR_SAMPLE
            bucket = one(aggregator.flush(), ALL)
            assert bucket.raw_count == authors + posts_by_bot
            # Misra–Gries: every one-post author counts; the bot at most cap plus the
            # mentions over the counters.
            bound = 3 + bucket.raw_count // (AUTHOR_COUNTERS + 1)
            assert authors + 3 <= bucket.count <= authors + bound
            assert bucket.reach == pytest.approx(10 * bucket.unique_authors, rel=0.01)
            estimates.append(bucket.unique_authors / (authors + 1))
        # k-minimum values with k = 64: each estimate is about 13 % off, their mean ~3 %.
        assert sum(estimates) / len(estimates) == pytest.approx(1.0, abs=0.12)
        assert all(0.5 < e < 2.0 for e in estimates)

    def test_author_counts_are_misra_gries(self) -> None:
        """The flat table counts as Misra–Gries over a dict does, mention by mention, on a
        stream that overflows its counters again and again (most authors post once, a few
        many times), with an author whose hash is 0 among them."""
        rng = random.Random(7)
        regulars = [rng.getrandbits(64) for _ in range(40)] + [0]
        table, reference = AuthorCounts(), {}
        for n in range(20_000):
            raw = rng.choice(regulars) if rng.random() < 0.3 else rng.getrandbits(64)
            author = raw or 1  # 0 marks the table's empty slots: hash 0 counts as 1
            seen = reference.get(author)
            if seen is not None:
                reference[author] = seen + 1
            elif len(reference) < AUTHOR_COUNTERS:
                reference[author] = 1
            else:
                reference = {a: c - 1 for a, c in reference.items() if c > 1}
            assert table.add(raw) == (seen or 0), n
            assert len(table) == len(reference) <= AUTHOR_COUNTERS
        assert pickle.loads(pickle.dumps(table)) == reference

    def test_author_counts_restore_at_most_their_counters(self) -> None:
        """Counts saved by a release with more counters are cut down as Misra–Gries would (the
        count after the last kept taken off each), so the table never fills; the hashes 0 and
        1, which count as one author, restore as one."""
        saved = {author: 10 + author % 7 for author in range(2, 2 + 3 * AUTHOR_COUNTERS)}
        saved |= {0: 4, 1: 9}
        table = AuthorCounts(saved)
        cut = sorted(saved.values(), reverse=True)[AUTHOR_COUNTERS]
        kept = {a: n - cut for a, n in saved.items() if a > 1 and n > cut}
        assert pickle.loads(pickle.dumps(table)) == kept
        assert len(table) == len(kept) <= AUTHOR_COUNTERS
        for author in range(10**6, 10**6 + 3 * AUTHOR_COUNTERS):  # new authors: no hang
            table.add(author)
        assert len(table) <= AUTHOR_COUNTERS
        assert pickle.loads(pickle.dumps(AuthorCounts({0: 4, 1: 9}))) == {1: 9}

    @pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy])
    def test_a_copied_aggregator_caps_on(
        self, feeder: Feeder, make_copy: Callable[[Aggregator], Aggregator]
    ) -> None:
        """A copy (which restores through the same `__setstate__` as a checkpoint, with its
        author counts already tables) goes on capping the same author."""
        for _ in range(3):
            feeder.add(1, author="bot")
        feeder.aggregator = make_copy(feeder.aggregator)
        feeder.add(2, author="bot")
        assert one(feeder.aggregator.flush(), ALL).count == 3

    def test_author_counts_restore_from_a_checkpoint(self, feeder: Feeder) -> None:
        """An open bucket's author counts pickle as the plain dict an earlier release kept
        (so a checkpoint reads in either), and restored they go on capping the same author."""
        for _ in range(3):
            feeder.add(1, author="bot")
        saved = pickle.dumps(feeder.aggregator)
        index = feeder.aggregator.index_of(at(1))
        as_saved = pickle.loads(pickle.dumps(feeder.aggregator._counters))
        assert as_saved[index]["kestrel"] == {author_key("bot"): 3}
        feeder.aggregator = pickle.loads(saved)
        assert isinstance(feeder.aggregator._counters[index]["kestrel"], AuthorCounts)
        feeder.add(2, author="bot")  # past the cap of 3: not counted
        feeder.add(2, author="someone")
        assert one(feeder.aggregator.flush(), ALL).count == 4

    def test_samples_most_negative_times_reach_first_and_bounded(self, feeder: Feeder) -> None:
        """Samples hold at most samples_per_bucket posts, ordered by negativity × reach."""
        specs = [
            (0.1, 10),
            (0.9, 10),
            (0.9, 100_000),
            (0.1, 100_000),
            (0.5, 1_000),
            (0.0, 0),
            (0.95, 50),
            (0.3, 5),
        ]
        scored = [
            feeder.add(minute / 2, negative=negative, author_followers=followers)
            for minute, (negative, followers) in enumerate(specs)
        ]
        bucket = one(feeder.aggregator.flush(), ALL)
        expected = sorted(scored, key=sample_weight, reverse=True)[:5]
        assert list(bucket.samples) == expected
        assert bucket.samples[0].mention.author_followers == 100_000
        assert bucket.samples[0].negative == 0.9
        assert all(s.mention.author_followers != 0 for s in bucket.samples)

    def test_the_most_followed_complaint_is_always_a_sample(self, feeder: Feeder) -> None:
        """Big neutral accounts outweigh a 250k-follower complaint as samples, yet it joins them
        (pages show it, and high_reach_negative, which reads the samples, sees it)."""
        happy = [feeder.add(n / 10, negative=0.1, author_followers=10_000_000) for n in range(6)]
        complaint = feeder.add(1, negative=0.9, author_followers=250_000)
        feeder.add(1.5, negative=0.6, author_followers=1_000)
        bucket = one(feeder.aggregator.flush(), ALL)
        assert list(bucket.samples) == [*happy[:5], complaint]

    def test_each_source_s_best_complaint_is_a_sample(self, feeder: Feeder) -> None:
        """Reddit's authors reach fewer than X's: a bucket whose complaints are cited on both
        still holds Reddit's most representative one (and only the best of each source)."""
        x_posts = [feeder.add(n / 10, negative=0.9, author_followers=5_000) for n in range(6)]
        feeder.add(1, negative=0.7, author_followers=3, source="reddit")
        reddit = feeder.add(1.2, negative=0.95, author_followers=40, source="reddit")
        bucket = one(feeder.aggregator.flush(), ALL)
        assert list(bucket.samples) == [*x_posts[:5], reddit]

    def test_an_open_bucket_from_an_older_checkpoint_restores(self, feeder: Feeder) -> None:
        """A bucket saved before the most-followed complaint was tracked restores without it."""
        aggregator = feeder.aggregator
        feeder.add(1, negative=0.9, author_followers=10)
        accumulator = aggregator._open[aggregator.index_of(at(1))][(ALL.brand, ALL.topic, "")]
        assert accumulator.loudest is not None
        _, slots = accumulator.__reduce_ex__(5)[2]
        older = {k: v for k, v in slots.items() if k not in ("loudest", "source_best")}
        restored = pickle.loads(pickle.dumps(accumulator))
        restored.__setstate__((None, older))
        assert restored.loudest is None and restored.source_best == {}
        assert restored.count == accumulator.count == 1

    def test_equal_samples_first_come_first(self, make_mention: MentionFactory) -> None:
        """Among equally weighted posts, the earliest are kept."""
        feeder = Feeder(make_aggregator(samples_per_bucket=2), make_mention)
        for n in range(4):
            feeder.feed(1 + n / 10)
        bucket = one(feeder.aggregator.flush(), ALL)
        assert [s.mention.id for s in bucket.samples] == ["x:1", "x:2"]

    def test_top_terms(self, feeder: Feeder) -> None:
        """Top terms are counted once per post, without stopwords, short words, digits or the
        brand's own names."""
        feeder.feed(1, text="The Kestrel Bank ATM swallowed my card and the 1234 pin")
        feeder.feed(2, text="kestrelbank ATM swallowed another card, #KestrelBank")
        feeder.feed(3, text="ATM atm ATM outage")
        bucket = one(feeder.aggregator.flush(), ALL)
        terms = dict(bucket.top_terms)
        assert terms["atm"] == 3
        assert terms["swallowed"] == 2
        assert terms["card"] == 2
        assert bucket.top_terms[0] == ("atm", 3)
        assert not set(terms) & (STOPWORDS | OWN_TERMS)
        assert "1234" not in terms
        assert "my" not in terms and "pin" in terms

    def test_top_terms_bounded(self, feeder: Feeder) -> None:
        """At most TOP_TERMS top terms are kept."""
        feeder.feed(1, text=" ".join(f"word{n}" for n in range(TOP_TERMS + 10)))
        assert len(one(feeder.aggregator.flush(), ALL).top_terms) == TOP_TERMS

    def test_counts_are_ranked_when_first_read(self, feeder: Feeder) -> None:
        """A closed bucket's top terms and sources are sorted from its counts only when read
        (most are read only by the learning after a close's pages, or never), and stand for
        the same tuples: equal to them, hashed as them, pickled as them (so checkpoints hold
        plain tuples, as before)."""
        feeder.feed(1, text="outage outage card")
        feeder.feed(2, text="outage atm")
        bucket = one(feeder.aggregator.flush(), ALL)
        terms = bucket.top_terms
        assert isinstance(terms, Ranked) and terms._top is None  # not sorted at the close
        expected = (("outage", 2), ("card", 1), ("atm", 1))
        assert terms == expected and hash(terms) == hash(expected)
        assert terms._counts is None  # the counts are let go of once sorted
        assert list(terms) == list(expected) and terms[1:] == expected[1:] and len(terms) == 3
        assert isinstance(bucket.sources, Ranked) and bucket.sources._top is None
        restored = pickle.loads(pickle.dumps(bucket))
        assert type(restored.top_terms) is tuple and type(restored.sources) is tuple
        assert restored == bucket and restored.sources == (("x", 2),)

    def test_a_post_gives_at_most_its_first_distinct_terms(self, feeder: Feeder) -> None:
        """A long post counts its first MAX_TERMS_PER_MENTION distinct terms, in the order
        written; repeats neither count twice nor use up the allowance."""
        words = [f"word{n}" for n in range(MAX_TERMS_PER_MENTION + 5)]
        feeder.feed(1, text=" ".join(w for word in words for w in (word, word)))
        late = words[
            MAX_TERMS_PER_MENTION - 1 : MAX_TERMS_PER_MENTION + 1
        ]  # the last in, first out
        for minutes in (2, 3):
            feeder.feed(minutes, text=" ".join(late))
        counted = dict(one(feeder.aggregator.flush(), ALL).top_terms)
        assert counted[late[0]] == 3  # the 40th distinct word of the long post counted
        assert counted[late[1]] == 2  # the 41st did not
        assert counted[words[0]] == 1  # and a repeated word counted once

    def test_term_counts_are_exact_below_the_counters(self, feeder: Feeder) -> None:
        """Up to TERM_COUNTERS distinct terms in a bucket, every count is exact: a term that
        comes up now and then among a post's other words is counted each time."""
        for n in range(TERM_COUNTERS - 1):
            feeder.add(1 + n / 1_000, text=f"word{n} outage" if n % 20 == 0 else f"word{n}")
        bucket = one(feeder.aggregator.flush(), ALL)
        assert bucket.top_terms[0] == ("outage", (TERM_COUNTERS - 2) // 20 + 1)
        assert {count for _, count in bucket.top_terms[1:]} == {1}

    def test_a_busy_vocabulary_is_sketched_in_bounded_memory(self, feeder: Feeder) -> None:
        """Thousands of one-off words take no more than TERM_COUNTERS counters, and a term that
        recurs through them stays on top with a count short of the truth by at most the
        sketch's bound (2 N / TERM_COUNTERS for N terms counted), never over it."""
        posts, outage = 3_000, 0
        for n in range(posts):
            words = " ".join(f"w{n}x{k}" for k in range(10))
            if n % 3 == 0:
                words, outage = f"{words} outage", outage + 1
            feeder.add(1 + n / 1_000, text=words)
        (open_bucket,) = feeder.aggregator._open.values()
        assert max(len(acc.terms) for acc in open_bucket.values()) <= TERM_COUNTERS
        bucket = one(feeder.aggregator.flush(), ALL)
        term, count = bucket.top_terms[0]
        bound = 2 * (posts * 10 + outage) / TERM_COUNTERS
        assert term == "outage" and outage - bound <= count <= outage

    def test_a_term_is_one_string_however_many_buckets_count_it(self, feeder: Feeder) -> None:
        """Terms are interned: buckets that counted the same word from different posts hold
        one string for it (a busy stream's thousand series would otherwise each hold a copy)."""
        feeder.add(1, text="".join(["out", "age"]) + " again")  # strings built at run time
        feeder.add(6, text="".join(["outa", "ge"]) + " again")
        closed = feeder.aggregator.flush()
        first, second = one(closed, ALL, at(0)), one(closed, ALL, at(5))
        assert first.top_terms[0] == second.top_terms[0] == ("outage", 1)
        assert first.top_terms[0][0] is second.top_terms[0][0]

    def test_flush_closes_everything_open(self, feeder: Feeder) -> None:
        """flush closes every open bucket, gaps included, and a second flush closes nothing."""
        feeder.add(1)
        feeder.add(6)
        feeder.add(16)
        closed = feeder.aggregator.flush()
        assert sorted({b.start for b in closed}) == [at(0), at(5), at(10), at(15)]
        assert [one(closed, ALL, at(m)).count for m in (0, 5, 10, 15)] == [1, 1, 0, 1]
        assert feeder.aggregator.flush() == []

    def test_flush_after_closing(self, feeder: Feeder) -> None:
        """flush does not close a bucket twice."""
        feeder.feed(1)
        closed = feeder.feed(8)
        rest = feeder.aggregator.flush()
        assert {b.start for b in closed} == {at(0)}
        assert {b.start for b in rest} == {at(5)}

    def test_flush_of_nothing(self) -> None:
        """An aggregator that saw nothing flushes nothing."""
        assert make_aggregator().flush() == []

    def test_watermark_never_goes_back(self, feeder: Feeder) -> None:
        """Advancing to an earlier time neither moves the watermark back nor closes anything."""
        feeder.feed(1)
        feeder.feed(8)
        assert feeder.aggregator.advance(at(3)) == []
        assert feeder.aggregator.watermark == at(6)

    def test_advance_without_mentions_closes_quiet_time(self, feeder: Feeder) -> None:
        """The clock alone closes buckets once a first mention set the start."""
        assert feeder.aggregator.advance(at(30)) == []  # nothing seen yet: nothing to close
        feeder.feed(31)
        closed = feeder.aggregator.advance(at(47))
        assert sorted({b.start for b in closed}) == [at(30), at(35), at(40)]


def test_author_estimates_are_the_same_in_every_process() -> None:
    """Author hashes do not depend on Python's per-process hash seed: a replay gives the same
    author counts whatever the seed (and a restored bucket knows its authors again)."""
    script = (
        "from crisiswatch.aggregate import author_key;"
        "print([author_key(f'user{n}') for n in range(5)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
