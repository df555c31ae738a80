"""Chart history rings, and series set up before their first bucket closes."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from crisiswatch.bench.pipeline import settings_for
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Bucket, Mention, Page, SeriesKey, Signal
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.pipeline import YOUNG_COLLECTION, Pipeline, settle
from crisiswatch.rules.loader import load_rules

KEY = SeriesKey("kestrel")
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
STEP = timedelta(minutes=5)


def signal(start: datetime, count: int) -> Signal:
    bucket = Bucket(KEY, start, start + STEP, count, count, 0, 0, 0, (), (), ())
    return Signal(bucket, 0.1, float(count), float(count) * 2, 0.1, 0.2, count)


def filled(history: SeriesHistory) -> SeriesHistory:
    for n, count in enumerate((4, 7)):
        history.record(signal(T0 + n * STEP, count))
    history.record(signal(T0 + 5 * STEP, 9))  # after a gap of three buckets
    return history


def test_a_prepared_ring_reads_like_one_made_at_first_record() -> None:
    """Allocating a series' ring up front changes nothing it shows: unknown before its first
    bucket, then the same values and gaps as a ring made when that bucket was recorded."""
    prepared = SeriesHistory(300)
    prepared.prepare([KEY])
    before = prepared.window(KEY, T0, timedelta(hours=1))
    assert len(before.count) == 12 and all(math.isnan(c) for c in before.count)
    span = (KEY, T0 + 6 * STEP, timedelta(hours=1))
    got, want = filled(prepared).window(*span), filled(SeriesHistory(300)).window(*span)
    assert (got.count[6], got.count[7], got.count[11]) == (4.0, 7.0, 9.0)
    assert [c if not math.isnan(c) else None for c in got.count] == [
        c if not math.isnan(c) else None for c in want.count
    ]


def test_the_pipeline_sets_up_every_configured_series_at_start() -> None:
    """Detectors and chart rings exist for every configured series before any mention, so a
    busy stream's memory does not step up when its first bucket closes."""
    settings = settings_for(3)
    rules = load_rules(settings.rules, settings)
    pipeline = Pipeline(settings, rules, SentimentModel.load_default())
    series = set(pipeline.rule_inputs.series(settings))
    assert len(series) == 3 * 6
    assert set(pipeline.detector._series) == series
    assert set(pipeline.history._rings) == series


@pytest.fixture
def collector() -> Iterator[None]:
    """The collector as it was before the test: `settle` changes it for the whole process."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
def test_settled_state_is_out_of_the_collectors_sight() -> None:
    """After `settle`, a full collection no longer walks the pipeline's long-lived state, and
    young collections are spaced out (CPython's 700 allocations is one every few dozen
    mentions at firehose rates)."""
    settings = settings_for(2)
    rules = load_rules(settings.rules, settings)
    pipeline = Pipeline(settings, rules, SentimentModel.load_default())
    detectors = pipeline.detector._series
    assert any(o is detectors for o in gc.get_objects())
    gc.set_threshold(700, 10, 10)
    settle()
    assert gc.get_freeze_count() > 0
    assert not any(o is detectors for o in gc.get_objects())
    assert gc.get_threshold() == (YOUNG_COLLECTION, 10, 10)


@pytest.mark.usefixtures("collector")
def test_settling_again_collects_what_died_since() -> None:
    """A reference cycle frozen by one `settle` and dropped afterwards is freed by the next
    (a reload): settling never keeps garbage for good."""

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    alive = weakref.ref(first)
    settle()
    del first, second
    gc.collect()
    assert alive() is not None  # frozen: out of the collector's sight
    settle()
    assert alive() is None


def test_closing_a_bucket_holds_the_collector_off_until_its_pages_are_made() -> None:
    """A bucket's close and judgement run with the cyclic collector off (a full collection
    there would delay the page); it is on again afterwards, for the same mention's caller,
    and a caller that had it off keeps it off. A mention that closes nothing leaves it be."""
    settings = settings_for(2)
    pipeline = Pipeline(
        settings, load_rules(settings.rules, settings), SentimentModel.load_default()
    )
    seen: list[bool] = []
    decide = pipeline.decide

    def watched(closed: list[Bucket]) -> list[Page]:
        seen.append(gc.isenabled())
        return decide(closed)

    pipeline.decide = watched  # type: ignore[method-assign]
    text = "brand000 card swallowed"
    pipeline.feed(Mention("x:1", "x", T0, text))
    assert seen == [] and gc.isenabled()
    pipeline.feed(Mention("x:2", "x", T0 + 3 * STEP, text))  # closes the first bucket
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        pipeline.feed(Mention("x:3", "x", T0 + 6 * STEP, text))
        assert seen == [False, False] and not gc.isenabled()
        pipeline.finish()
        assert seen == [False, False, False] and not gc.isenabled()
    finally:
        gc.enable()
