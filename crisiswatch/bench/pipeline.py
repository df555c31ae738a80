"""`bench pipeline`: the whole decision path at firehose rates, measured on one core.

A stream of realistic mention JSON lines is generated (or read from a file) for B brands with
five topics each, at `rate` mentions per second of event time (by default the X firehose's
average), then run through parse → dedupe → attribution → sentiment → buckets → detectors →
rules → incidents, with every page rendered but not sent. The stream is handled in chunks, never
held whole, so memory can be measured over millions of mentions. Each chunk is timed through the
pipeline, then (not timed as pipeline) just parsed, and the parsed texts just scored for
sentiment: the pipeline's cost is shown as a ratio of reading its input, and the sentiment
model's share of it.

A file is measured with the benchmark's made-up brands (so a real stream is mostly about none
of them, and attributed no further) unless a deployment's settings are given (`--config`). Its
malformed lines are skipped and not measured as mentions; the report says how many, and how many
mentions were counted, about none of the brands, duplicates or too late.

Printed: a progress line every million mentions (throughput so far, peak memory), then
mentions per second, CPU seconds per million, the parse-only ratio, the sentiment share, how
long a mention waits for its bucket's decision, how long closing and judging a bucket takes (its
close to its pages: building every series' bucket, detectors, rules, incidents, rendering), and
peak memory. All times are process CPU time (the machine may be shared), except `wall`.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from itertools import accumulate, groupby, islice
from pathlib import Path
from typing import TextIO

import numpy as np
import orjson

from crisiswatch.config import Brand, Settings
from crisiswatch.domain import Bucket, Mention, Page
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import (
    UNREADABLE,
    MentionError,
    open_lines,
    parse_mention,
    unreadable_reason,
)
from crisiswatch.notify.render import render_text
from crisiswatch.pipeline import Pipeline, PipelineStats, settle
from crisiswatch.rules.loader import load_rules

TOPICS = {
    "cards": ["card", "atm", "debit"],
    "app": ["app", "login", "outage"],
    "branches": ["branch", "teller", "queue"],
    "fees": ["fee", "charge", "overdraft"],
    "support": ["support", "helpline", "chat"],
}
PHRASES = [
    "love the new {topic} from {brand}, so easy",
    "{brand} {topic} is down again, absolutely furious",
    "anyone else having trouble with the {brand} {topic}?",
    "@{brand} thanks for sorting my {topic} out today",
    "worst {topic} experience ever with {brand}, never again",
    "just opened an account with {brand}, the {topic} looks fine",
]
VOCABULARY = 30_000  # distinct everyday words, drawn by Zipf's law as the words of posts are
FILLER = (2, 8)  # everyday words added to each post, fewest and most
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
FIREHOSE_RATE = 6_000.0  # mentions per event-time second: the public X firehose's average
STRESS_RATE = 2.3148  # a day of event time in 200,000 mentions: judging buckets dominates
WARM_UP = timedelta(hours=25)  # every detector past its first day (profiles, new terms)
SURGE = 4.0  # a surging brand's share of a generated stream, times an ordinary brand's
SAMPLE = 20_000  # mentions sampled for the series' usual buckets at the stream's own density
START = datetime(2026, 3, 2, tzinfo=UTC)  # a generated stream's first event time
CHUNK = 10_000  # lines generated, timed and dropped together
PROGRESS = 1_000_000  # mentions between progress lines (throughput so far, peak memory)


def _word(rank: int) -> str:
    """A made-up word for a vocabulary rank: two or three syllables, the same every run."""
    syllables = []
    for _ in range(3 if rank >= len(_SYLLABLES) ** 2 else 2):
        rank, syllable = divmod(rank, len(_SYLLABLES))
        syllables.append(_SYLLABLES[syllable])
    return "".join(syllables)


def generate(
    count: int,
    brands: int,
    rate: float = FIREHOSE_RATE,
    seed: int = 7,
    *,
    start: datetime = START,
    ids: str = "x",
    surging: int = 0,
) -> Iterator[bytes]:
    """`count` mention JSON lines over `brands` brands, `rate` per second of event time from
    `start`: one of a few phrases about the brand and a topic, then a few everyday words from a
    Zipfian vocabulary (so each bucket brings the thousands of distinct words a real stream
    does). Their ids are `ids`:0, `ids`:1 and so on. The first `surging` brands are mentioned
    `SURGE` times as often as the others."""
    rng = random.Random(seed)
    shares = list(accumulate([SURGE] * surging + [1.0] * (brands - surging)))
    words = [_word(rank) for rank in range(VOCABULARY)]
    zipf = list(accumulate(1.0 / rank for rank in range(1, VOCABULARY + 1)))
    buffer = bytearray()
    for n in range(count):
        if surging:
            brand = f"brand{rng.choices(range(brands), cum_weights=shares)[0]:03d}"
        else:  # drawn as before surges existed, so earlier runs' streams are unchanged
            brand = f"brand{rng.randrange(brands):03d}"
        topic = rng.choice(list(TOPICS))
        text = rng.choice(PHRASES).format(brand=brand, topic=rng.choice(TOPICS[topic]))
        filler = rng.choices(words, cum_weights=zipf, k=rng.randint(*FILLER))
        text = f"{text} {' '.join(filler)}"
        at = start + timedelta(seconds=n / rate)
        row = {
            "id": f"{ids}:{n}",
            "source": rng.choice(("x", "x", "reddit")),
            "created_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "text": text,
            "author": f"user{rng.randrange(200_000)}",
            "author_followers": int(rng.paretovariate(1.2) * 50),
        }
        buffer += orjson.dumps(row)  # copied: orjson's bytes each keep a 4 KB buffer
        buffer += b"\n"
        if (n + 1) % CHUNK == 0 or n + 1 == count:
            yield from bytes(buffer).splitlines()
            buffer.clear()


def settings_for(brands: int) -> Settings:
    return Settings(
        rules=[Path(__file__).resolve().parents[1] / "default_rules"],
        brands=[
            Brand(id=f"brand{b:03d}", keywords=[f"brand{b:03d}"], topics=TOPICS)
            for b in range(brands)
        ],
    )


class BenchInputError(Exception):
    """The file to measure cannot be read; the message says which and why."""


@dataclass(slots=True)
class _Tally:
    """What one run measured."""

    lines: int = 0
    malformed: int = 0  # lines that are no mention: skipped, not measured as mentions
    cpu: float = 0.0  # the pipeline's CPU seconds
    wall: float = 0.0
    parse: float = 0.0  # CPU seconds to only parse the same lines
    sentiment: float = 0.0  # CPU seconds to only score the same texts
    pages: int = 0
    waits: list[float] = field(default_factory=list)  # pipeline CPU s, first arrival → decision
    judging: list[float] = field(default_factory=list)  # CPU s per bucket close, to its pages
    learning: list[float] = field(default_factory=list)  # CPU s per close's learning, after them

    @property
    def count(self) -> int:
        """The mentions measured: parsed and fed to the pipeline."""
        return self.lines - self.malformed


def bench_pipeline(
    out: TextIO,
    *,
    mentions: int,
    brands: int,
    path: Path | None = None,
    rate: float = FIREHOSE_RATE,
    settings: Settings | None = None,
    warm_up: timedelta = timedelta(0),
    surging: int | None = None,
) -> int:
    """Measure; `settings`: a deployment's, for a file (default: `brands` made-up brands);
    `warm_up`: event time fed first, untimed, to a generated stream: at the stress density
    (`_warm_up`), or with `surging` given, at the stream's own (`_warm_up_at_density`), then
    that many brands surge in the measured stream. Raises `BenchInputError` when the file
    cannot be read."""
    settings = settings or settings_for(brands)
    pipeline = Pipeline(
        settings, load_rules(settings.rules, settings), SentimentModel.load_default()
    )
    pipeline.learn_after_pages = True  # as in the daemon: a close's learning after its pages
    start = START
    hours = f"{warm_up / timedelta(hours=1):g} h of event time"
    if warm_up and path is None and surging is not None:
        start = _warm_up_at_density(pipeline, brands, rate, warm_up, surging)
        out.write(
            f"warm-up: {hours} at the stream's density, {pipeline.stats.buckets:,} "
            f"series-buckets like a sample of {SAMPLE:,} of its mentions judged (not "
            f"measured); then {surging} of {brands} brands surge ({SURGE:g}× their share)\n"
        )
    elif warm_up and path is None:
        start = _warm_up(pipeline, brands, warm_up)
        out.write(
            f"warm-up: {hours} at {STRESS_RATE} mentions/s, {pipeline.stats.buckets:,} "
            f"series-buckets judged (not measured)\n"
        )
    warmed = replace(pipeline.stats)
    settle()  # as the daemon does once started (restored from a checkpoint, after a warm-up)
    tally = _Tally()
    lines = (
        generate(mentions, brands, rate, start=start, surging=surging or 0)
        if path is None
        else _read(path)
    )
    _run(pipeline, lines, tally, out)
    if tally.count == 0:
        out.write(f"pipeline: no mentions to measure ({tally.malformed:,} malformed lines)\n")
        return 1
    measured = PipelineStats(
        **{
            f.name: getattr(pipeline.stats, f.name) - getattr(warmed, f.name)
            for f in fields(warmed)
        }
    )
    _report(out, tally, settings, rate if path is None else None, measured)
    return 0


def _warm_up(pipeline: Pipeline, brands: int, span: timedelta) -> datetime:
    """Feed `span` of event time at the stress density, untimed, and close every bucket of it;
    return the bucket end where the measured stream starts. Detectors in their first hours or
    day skip much of their work (no surprise before three hours, no time-of-day profile nor new
    terms before a day), so without it every close of a firehose run, whose millions of
    mentions span minutes, is judged by detectors still warming up, faster than a running
    daemon's. Its low density makes the measured stream a surge in every series, as in a
    crisis."""
    width = pipeline.settings.pipeline.bucket
    for line in generate(
        round(span.total_seconds() * STRESS_RATE), brands, STRESS_RATE, 8, ids="w"
    ):
        pipeline.feed(parse_mention(line))
    end = START + math.ceil(span / width) * width
    pipeline.advance(end + pipeline.settings.pipeline.allowed_lateness)
    pipeline.learn_pending()
    return end


def _warm_up_at_density(
    pipeline: Pipeline, brands: int, rate: float, span: timedelta, surging: int = 0
) -> datetime:
    """Judge `span` of event time at the stream's own density, untimed; return the bucket end
    where the measured stream starts. Its mentions would take hours to feed at the firehose
    density, so each series' buckets are made like those of a sample: `SAMPLE` mentions of
    the same generator counted into the last bucket before the stream (closed unjudged, so
    the stream follows on from it), their counts scaled to the density and drawn anew for
    each bucket (Poisson, with binomial negatives). The measured stream is then as usual to
    the detectors, except for the `surging` brands made to surge in it.

    The generator mentions every brand alike, so a series' share of the mentions and its
    negative share are those of its topic and view over all brands in the sample: a brand's
    own hundred-odd sample mentions, scaled up to a firehose bucket's thousands, taught each
    series a usual count and negative share some ten standard deviations of a bucket off its
    stream's, either way (an ordinary 200-brand stream surged or slumped in most series).
    Pooled, the error is `sqrt(rate × bucket / brands / SAMPLE)` of them: 0.7 at 200 brands
    of the firehose, more for fewer brands. Each brand is as busy as an ordinary brand of the
    measured stream, so the surging ones are `SURGE` times their usual, however many surge."""
    width = pipeline.settings.pipeline.bucket
    ends = max(math.ceil(span / width), 2)
    end = START + ends * width
    for line in generate(SAMPLE, brands, SAMPLE / 60.0, 9, start=end - width, ids="s"):
        pipeline.feed(parse_mention(line))  # a minute of the last bucket: none closes
    usual = pipeline.aggregator.flush()
    pooled: dict[tuple[str, str], tuple[int, int]] = {}  # (topic, view) -> count, negatives
    for bucket in usual:
        kind = (bucket.series.topic, bucket.series.view)
        count, negative = pooled.get(kind, (0, 0))
        pooled[kind] = (count + bucket.count, negative + bucket.negative_count)
    ordinary = rate * width.total_seconds() / (SURGE * surging + brands - surging)
    kinds = [pooled[(bucket.series.topic, bucket.series.view)] for bucket in usual]
    expected = np.array([ordinary * count / SAMPLE for count, _ in kinds])
    shares = np.array([negative / count if count else 0.0 for count, negative in kinds])
    draws = np.random.default_rng(9)
    for n in range(ends - 1):
        counts = draws.poisson(expected)
        negatives = draws.binomial(counts, shares)
        at = START + n * width
        pipeline.decide(
            [
                _like(bucket, at, at + width, int(count), int(negative))
                for bucket, count, negative in zip(usual, counts, negatives, strict=True)
            ]
        )
        pipeline.learn_pending()
    return end


def _like(bucket: Bucket, start: datetime, end: datetime, count: int, negative: int) -> Bucket:
    """A bucket of the same series, terms and sources as `bucket`, with other times and
    counts (its authors, reach and watched terms' counts in proportion, no sample posts)."""
    ratio = count / bucket.count if bucket.count else 0.0
    return replace(
        bucket,
        start=start,
        end=end,
        count=count,
        raw_count=count,
        negative_count=negative,
        unique_authors=min(count, round(bucket.unique_authors * ratio)),
        reach=round(bucket.reach * ratio),
        samples=(),
        bursts=tuple((terms, round(seen * ratio)) for terms, seen in bucket.bursts),
    )


def _read(path: Path) -> Iterator[bytes]:
    """The lines of a mention file, gunzipped if need be; one that cannot be read (missing, a
    corrupt or truncated gzip) raises `BenchInputError`."""
    try:
        with open_lines(path) as lines:
            yield from lines
    except UNREADABLE as exc:
        raise BenchInputError(f"cannot read {path}: {unreadable_reason(exc)}") from None


def _run(pipeline: Pipeline, lines: Iterable[bytes], tally: _Tally, progress: TextIO) -> None:
    """Feed every line through `pipeline` chunk by chunk, timing each stage as described above."""
    width = int(pipeline.settings.pipeline.bucket.total_seconds())
    arrivals: dict[int, float] = {}  # bucket index -> pipeline CPU clock at its first mention
    decided = [-1]  # buckets below this index have been decided
    decide, close = pipeline.decide, pipeline.aggregator._close
    closing: dict[int, float] = {}  # bucket index -> CPU s spent closing it, until it is judged
    # when the last bucket end was judged, until the call that closed it returns: what comes
    # between (the collection held off while it closed) also keeps its pages from leaving
    decided_at: list[float | None] = [None]
    chunk_started = 0.0

    def clock() -> float:
        return tally.cpu + time.process_time() - chunk_started

    def timed_close(index: int) -> list[Bucket]:
        started = time.process_time()
        buckets = close(index)  # building each series' bucket, and freeing what it counted
        closing[index] = time.process_time() - started
        return buckets

    def timed_decide(closed: list[Bucket]) -> list[Page]:
        """Judge each bucket end on its own (the stream's end closes several at once), timing
        it from its close to its rendered pages."""
        if not closed:
            return []  # most mentions close nothing: no clock read for them
        made: list[Page] = []
        for index, group in groupby(closed, key=lambda b: int(b.start.timestamp()) // width):
            started = time.process_time()
            pages = decide(list(group))
            for page in pages:
                render_text(page)
            tally.judging.append(time.process_time() - started + closing.pop(index, 0.0))
            decided_at[0] = time.process_time()
            now = clock()
            decided[0] = max(decided[0], index + 1)
            if index in arrivals:
                tally.waits.append(now - arrivals.pop(index))
            made.extend(pages)
        tally.pages += len(made)
        return made

    def count_tail() -> None:
        assert decided_at[0] is not None
        tally.judging[-1] += time.process_time() - decided_at[0]
        decided_at[0] = None

    learn_pending = pipeline.learn_pending

    def timed_learning() -> None:
        started = time.process_time()
        learn_pending()
        tally.learning.append(time.process_time() - started)

    pipeline.decide = timed_decide  # type: ignore[method-assign]
    pipeline.aggregator._close = timed_close  # type: ignore[method-assign]
    pipeline.learn_pending = timed_learning  # type: ignore[method-assign]
    feed, scorer = pipeline.feed, pipeline.scorer
    it = iter(lines)
    while chunk := list(islice(it, CHUNK)):
        wall_started, chunk_started = time.perf_counter(), time.process_time()
        for line in chunk:
            try:
                mention = parse_mention(line)
            except MentionError:
                tally.malformed += 1
                continue
            index = int(mention.created_at.timestamp()) // width
            if index >= decided[0] and index not in arrivals:
                arrivals[index] = clock()
            feed(mention)
            if decided_at[0] is not None:
                count_tail()
        tally.cpu += time.process_time() - chunk_started
        tally.wall += time.perf_counter() - wall_started
        tally.lines += len(chunk)
        if tally.lines % PROGRESS == 0:
            progress.write(
                f"  after {tally.count:,} mentions: {tally.count / tally.cpu:,.0f} mentions/s, "
                f"peak RSS {_peak_mb():.0f} MB\n"
            )
            progress.flush()
        parse_started = time.process_time()
        parsed = _parse_only(chunk)
        sentiment_started = time.process_time()
        for mention in parsed:
            scorer.negative_one(mention.text)
        tally.parse += sentiment_started - parse_started
        tally.sentiment += time.process_time() - sentiment_started
        del parsed  # not kept into the next chunk's timing: the daemon holds no such list
    wall_started, chunk_started = time.perf_counter(), time.process_time()
    pipeline.finish()
    if decided_at[0] is not None:
        count_tail()
    if pipeline.learning_pending:  # timed only when there is learning to do
        pipeline.learn_pending()
    tally.cpu += time.process_time() - chunk_started
    tally.wall += time.perf_counter() - wall_started


def _parse_only(chunk: Sequence[bytes]) -> list[Mention]:
    parsed = []
    for line in chunk:
        try:
            parsed.append(parse_mention(line))
        except MentionError:
            continue
    return parsed


def _report(
    out: TextIO, tally: _Tally, settings: Settings, rate: float | None, stats: PipelineStats
) -> None:
    count, cpu = tally.count, tally.cpu
    peak_mb = _peak_mb()
    series = sum(1 + len(brand.topics) for brand in settings.brands)
    out.write(
        f"pipeline: {count:,} mentions, {len(settings.brands)} brands, {series:,} series, "
        f"{tally.pages} pages\n"
        f"  {stats.mentions:,} counted, {stats.unattributed:,} about none of the brands, "
        f"{stats.duplicates:,} duplicates, {stats.late:,} too late; "
        f"{tally.malformed:,} malformed lines skipped\n"
    )
    if stats.unattributed > count / 2:
        out.write(
            "  most mentions are about none of the brands, so they were measured only up to "
            "attribution: give --config with the deployment the file comes from\n"
        )
    if rate is not None:
        span = count / rate
        out.write(
            f"  event time: {rate:,.2f} mentions/s, {span / 86_400:.2f} days, "
            f"{stats.buckets:,} series-buckets judged ({stats.buckets / max(count, 1):.3f} "
            f"per mention)\n"
        )
    out.write(f"  mentions per second (CPU)       {count / cpu:>12,.0f}\n")
    out.write(f"  CPU seconds per million         {cpu / count * 1e6:>12.1f}\n")
    out.write(f"  wall seconds                    {tally.wall:>12.2f}\n")
    out.write(
        f"  parse only: {tally.parse:.2f} s CPU; pipeline / parse = "
        f"{cpu / max(tally.parse, 1e-9):.1f}×\n"
    )
    out.write(
        f"  sentiment only: {tally.sentiment:.2f} s CPU, "
        f"{tally.sentiment / cpu:.0%} of the pipeline\n"
    )
    if tally.waits:
        out.write(
            f"  mention → its bucket's decision  p50 {_q(tally.waits, 0.5):.2f} s, "
            f"p99 {_q(tally.waits, 0.99):.2f} s (pipeline CPU; buckets close by event time)\n"
        )
    if tally.judging:
        closes = _closes(len(tally.judging))
        out.write(
            f"  closing and judging a bucket (all series: detectors, rules, incidents, rendering)  "
            f"p50 {_q(tally.judging, 0.5) * 1000:.1f} ms, "
            f"p99 {_q(tally.judging, 0.99) * 1000:.1f} ms, "
            f"max {max(tally.judging) * 1000:.1f} ms ({closes})\n"
        )
    if tally.learning:
        out.write(
            f"  then learning from it (after its pages, before the next mention)  "
            f"p50 {_q(tally.learning, 0.5) * 1000:.1f} ms, "
            f"p99 {_q(tally.learning, 0.99) * 1000:.1f} ms ({_closes(len(tally.learning))})\n"
        )
    out.write(f"  peak RSS                        {peak_mb:>10.0f} MB\n")


def _closes(n: int) -> str:
    return f"{n:,} close" + ("s" if n > 1 else "")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _q(values: Sequence[float], quantile: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(quantile * 100) - 1]
