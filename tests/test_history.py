"""Chart history rings, and series set up before their first bucket closes."""

from __future__ import annotations

import copyreg
import gc
import io
import math
import pickle
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crisiswatch.bench.pipeline import settings_for
from crisiswatch.cli import DEMO_CONFIG, DEMO_DIR
from crisiswatch.config import load_settings
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Bucket, Mention, Page, PageKind, SeriesKey, Signal, Totals
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, read_mentions
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


def windows(history: SeriesHistory, *keys: SeriesKey) -> list[list[float | None]]:
    """Every column of each series' last hours, NaN as None (NaN never equals itself)."""
    found = [history.window(key, T0 + 6 * STEP, timedelta(hours=2)) for key in keys]
    columns = [column for w in found for column in (w.count, w.negative, w.expected, w.upper)]
    return [[None if math.isnan(v) else v for v in column] for column in columns]


def test_history_pickles_as_it_was_from_now_and_from_before_its_compact_form() -> None:
    """A pickled history (four buffers for all rings) reads back the same, a ring never
    written included; one pickled as checkpoints had it before (its attributes, the rings
    one by one) still loads, so an upgrade keeps the charts."""
    history = filled(SeriesHistory(300))
    history.prepare([KEY, SeriesKey("quiet")])
    keys = (KEY, SeriesKey("quiet"))

    class Before(pickle.Pickler):
        def reducer_override(self, obj: object) -> Any:
            if not isinstance(obj, SeriesHistory):
                return NotImplemented
            attributes = {
                "bucket_seconds": obj.bucket_seconds,
                "size": obj.size,
                "_rings": obj._rings,
            }
            return (copyreg.__newobj__, (SeriesHistory,), attributes)  # object's default

    older = io.BytesIO()
    Before(older, protocol=pickle.HIGHEST_PROTOCOL).dump(history)
    for data in (pickle.dumps(history, protocol=pickle.HIGHEST_PROTOCOL), older.getvalue()):
        back = pickle.loads(data)
        assert windows(back, *keys) == windows(history, *keys)
        back.record(signal(T0 + 6 * STEP, 5))  # and goes on recording
        assert back.window(KEY, T0 + 7 * STEP, STEP).count == (5.0,)


def test_a_frozen_copy_keeps_still_while_the_history_goes_on_recording() -> None:
    """A checkpoint's copy shows the history as it was when taken, whatever is recorded
    meanwhile (copy on write); the history itself has every record, during and after."""
    history = filled(SeriesHistory(300))
    before = windows(history, KEY)
    with history.frozen() as still:
        history.record(signal(T0 + 6 * STEP, 11))
        history.record(signal(T0 + 7 * STEP, 12))
        assert windows(still, KEY) == before
        kept = pickle.loads(pickle.dumps(still))
    history.record(signal(T0 + 8 * STEP, 13))
    assert windows(kept, KEY) == before
    assert history.window(KEY, T0 + 9 * STEP, 3 * STEP).count == (11.0, 12.0, 13.0)


def test_totals_sum_the_known_buckets_and_say_from_when() -> None:
    """An incident's totals: the counts of the buckets that start in [start, end), gaps left
    out; from the first bucket held when the ring no longer holds the start; None if none."""
    history = SeriesHistory(300)
    for n, (count, negative) in enumerate(((4, 1), (7, 3), (0, 0), (9, 6))):
        start = T0 + n * STEP
        bucket = Bucket(KEY, start, start + STEP, count, count, negative, 0, 0, (), (), ())
        history.record(Signal(bucket, 0.1, 1.0, 2.0, 0.1, 0.2, 0))
    assert history.totals(KEY, T0, T0 + 4 * STEP) == Totals(T0, 20, 10)
    assert history.totals(KEY, T0 + STEP, T0 + 3 * STEP) == Totals(T0 + STEP, 7, 3)
    earlier = T0 - timedelta(hours=1)  # before the first bucket recorded
    assert history.totals(KEY, earlier, T0 + 2 * STEP) == Totals(T0, 11, 4)
    assert history.totals(KEY, T0 - STEP, T0) is None
    assert history.totals(SeriesKey("other"), T0, T0 + STEP) is None
    assert Totals(T0, 20, 10).negative_share == 0.5 and Totals(T0, 0, 0).negative_share == 0.0


def test_pages_carry_the_brand_s_totals_since_the_incident_began() -> None:
    """Every page leaves the pipeline with the incident's totals: the brand's roll-up buckets
    closed from its start to the page (alerting or not), summed."""
    settings = load_settings(DEMO_CONFIG)
    model = SentimentModel.load_default()
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), model)
    rollups: list[Bucket] = []
    decide = pipeline.decide

    def kept(closed: list[Bucket]) -> list[Page]:
        rollups.extend(b for b in closed if b.series == SeriesKey("kestrel"))
        return decide(closed)

    pipeline.decide = kept  # type: ignore[method-assign]
    with open_lines(DEMO_DIR / "demo_mentions.jsonl.gz") as handle:
        mentions = [m for m in read_mentions(handle) if isinstance(m, Mention)]
    pages = [page for mention in mentions for page in pipeline.feed(mention)]
    pages += pipeline.finish()
    assert len(pages) > 5
    for page in pages:
        incident = page.incident
        counted = [b for b in rollups if incident.started_at <= b.start < page.at]
        assert incident.totals == Totals(
            incident.started_at,
            sum(b.count for b in counted),
            sum(b.negative_count for b in counted),
        )
    resolved = [p for p in pages if p.kind is PageKind.RESOLVED]
    assert resolved and all(p.incident.totals.count > p.incident.peak_count for p in resolved)


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
    pipeline.feed(Mention("x:2", "x", T0 + 3 * STEP, text))  # closes the first buckets
    assert seen and not any(seen) and gc.isenabled()  # off for each bucket end judged
    judged = len(seen)
    gc.disable()
    try:
        pipeline.feed(Mention("x:3", "x", T0 + 6 * STEP, text))
        assert len(seen) > judged and not any(seen) and not gc.isenabled()
        judged = len(seen)
        pipeline.finish()
        assert len(seen) > judged and not any(seen) and not gc.isenabled()
    finally:
        gc.enable()
