"""`bench pipeline`: the whole decision path at firehose rates, measured on one core.

A stream of realistic mention JSON lines is generated (or read from a file) for B brands with
five topics each, then run through parse → dedupe → attribution → sentiment → buckets →
detectors → rules → incidents, with every page rendered but not sent. Printed: mentions per
second, CPU seconds per million, the time to only parse the same lines (the pipeline's cost as a
ratio of reading its input), how long a mention waits for its bucket's decision, how long
judging a closed bucket takes, and peak memory.
"""

from __future__ import annotations

import contextlib
import random
import resource
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import orjson

from crisiswatch.config import Brand, Settings
from crisiswatch.domain import Bucket, Page
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import MentionError, parse_mention
from crisiswatch.notify.render import render_text
from crisiswatch.pipeline import Pipeline
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
SPAN = timedelta(days=1)  # the generated stream covers a day of event time: 288 buckets


def generate(count: int, brands: int, seed: int = 7) -> list[bytes]:
    """`count` mention JSON lines over `brands` brands, spread evenly over a day."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    buffer = bytearray()
    for n in range(count):
        brand = f"brand{rng.randrange(brands):03d}"
        topic = rng.choice(list(TOPICS))
        text = rng.choice(PHRASES).format(brand=brand, topic=rng.choice(TOPICS[topic]))
        at = start + SPAN * (n / count)
        row = {
            "id": f"x:{n}",
            "source": rng.choice(("x", "x", "reddit")),
            "created_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "text": text,
            "author": f"user{rng.randrange(200_000)}",
            "author_followers": int(rng.paretovariate(1.2) * 50),
        }
        buffer += orjson.dumps(row)  # copied at once: orjson's bytes each keep a 4 KB buffer
        buffer += b"\n"
    return bytes(buffer).splitlines()


def settings_for(brands: int) -> Settings:
    return Settings(
        rules=[Path(__file__).resolve().parents[1] / "default_rules"],
        brands=[
            Brand(id=f"brand{b:03d}", keywords=[f"brand{b:03d}"], topics=TOPICS)
            for b in range(brands)
        ],
    )


def bench_pipeline(out: TextIO, *, mentions: int, brands: int, path: Path | None = None) -> int:
    lines = path.read_bytes().splitlines() if path else generate(mentions, brands)
    settings = settings_for(brands)
    rules = load_rules(settings.rules, settings)

    parse_started = time.process_time()
    for line in lines:
        with contextlib.suppress(MentionError):
            parse_mention(line)
    parse_seconds = time.process_time() - parse_started

    pipeline = Pipeline(settings, rules, SentimentModel.load_default())
    arrivals: dict[datetime, float] = {}  # bucket start -> wall time its first mention arrived
    waits: list[float] = []
    judging: list[float] = []
    pages: list[Page] = []
    decide = pipeline.decide

    def timed_decide(closed: list[Bucket]) -> list[Page]:
        started = time.perf_counter()
        made = decide(closed)
        for page in made:
            render_text(page)
        finished = time.perf_counter()
        if closed:
            judging.append(finished - started)
        for start in {b.start for b in closed}:
            if start in arrivals:
                waits.append(finished - arrivals.pop(start))
        return made

    pipeline.decide = timed_decide  # type: ignore[method-assign]
    width = int(settings.pipeline.bucket.total_seconds())
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for line in lines:
        try:
            mention = parse_mention(line)
        except MentionError:
            continue
        bucket = datetime.fromtimestamp(int(mention.created_at.timestamp()) // width * width, UTC)
        arrivals.setdefault(bucket, time.perf_counter())
        pages.extend(pipeline.feed(mention))
    pages.extend(pipeline.finish())
    cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started_wall
    _report(out, len(lines), brands, cpu, wall, parse_seconds, waits, judging, len(pages))
    return 0


def _report(
    out: TextIO,
    count: int,
    brands: int,
    cpu: float,
    wall: float,
    parse_seconds: float,
    waits: Sequence[float],
    judging: Sequence[float],
    pages: int,
) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write(f"pipeline: {count:,} mentions, {brands} brands × 6 series, {pages} pages\n")
    out.write(f"  mentions per second (CPU)       {count / cpu:>12,.0f}\n")
    out.write(f"  CPU seconds per million         {cpu / count * 1e6:>12.1f}\n")
    out.write(f"  wall seconds                    {wall:>12.2f}\n")
    out.write(
        f"  parse only: {parse_seconds:.2f} s CPU; pipeline / parse = "
        f"{cpu / max(parse_seconds, 1e-9):.1f}×\n"
    )
    if waits:
        out.write(
            f"  mention → its bucket's decision  p50 {_q(waits, 0.5):.1f} s, "
            f"p99 {_q(waits, 0.99):.1f} s (wall; buckets close by event time)\n"
        )
    if judging:
        out.write(
            f"  judging a closed bucket (rules, incidents, rendering)  "
            f"p50 {_q(judging, 0.5) * 1000:.1f} ms, p99 {_q(judging, 0.99) * 1000:.1f} ms\n"
        )
    out.write(f"  peak RSS                        {peak_mb:>10.0f} MB\n")


def _q(values: Sequence[float], quantile: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(quantile * 100) - 1]
