"""A live close's pages come before its learning: the daemon queues a bucket end's pages, then
its detectors learn from it (about a third of a busy close's time), with the same pages and the
same learned state as learning before the pages."""

from __future__ import annotations

import gc
import pickle
import re
from pathlib import Path

from daemon_stream import AngryScorer, Recorder, settings_for, write_stream
from prometheus_client import CollectorRegistry, generate_latest

from crisiswatch.cli import DEMO_CONFIG, DEMO_DIR
from crisiswatch.config import load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Mention, Page, PageKind
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, read_mentions
from crisiswatch.ops.http import DaemonCollector
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.store import Store


def demo_pipeline(*, pages_first: bool) -> Pipeline:
    settings = load_settings(DEMO_CONFIG)
    model = SentimentModel.load_default()
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), model)
    pipeline.learn_after_pages = pages_first
    return pipeline


def demo_mentions() -> list[Mention]:
    with open_lines(DEMO_DIR / "demo_mentions.jsonl.gz") as handle:
        return [m for m in read_mentions(handle) if isinstance(m, Mention)]


def learned(pipeline: Pipeline) -> bytes:
    return pickle.dumps(pipeline.snapshot()["detector"])


def test_a_close_pages_before_it_learns_and_ends_the_same() -> None:
    """After a close that opens an incident, its detectors have not learned the bucket yet and
    the collector is still held off; `learn_pending` learns it and lets the collector go. Over
    the whole demo, the pages and the learned state are those of learning inline."""
    inline, first = demo_pipeline(pages_first=False), demo_pipeline(pages_first=True)
    mentions = demo_mentions()
    expected = [page for m in mentions for page in inline.feed(m)] + inline.finish()
    got: list[Page] = []
    for mention in mentions:
        pages = first.feed(mention)
        got += pages
        if not any(page.kind is PageKind.OPENED for page in pages):
            continue
        assert first.learning_pending and not gc.isenabled()
        series = first.detector._series[pages[0].incident.latest.bucket.series]
        before = series.volume._n
        first.learn_pending()
        assert series.volume._n == before + 1 and not first.learning_pending
        assert gc.isenabled()
    got += first.finish()
    assert first.learning_pending  # the stream's end too: its pages first
    first.learn_pending()
    assert len(expected) > 5
    assert [(p.kind, p.incident.id, p.at) for p in got] == [
        (p.kind, p.incident.id, p.at) for p in expected
    ]
    assert learned(first) == learned(inline)


def test_the_next_mention_a_snapshot_or_a_false_alarm_learns_first() -> None:
    """Whatever comes after a close finds its bucket learned: a snapshot (a checkpoint must
    not lose it), the next mention, and a False alarm, which is then accepted on top of it,
    as when learning came before the pages."""
    mentions = demo_mentions()
    for then in ("snapshot", "feed", "false_alarm"):
        inline, first = demo_pipeline(pages_first=False), demo_pipeline(pages_first=True)
        for n, mention in enumerate(mentions):
            inline.feed(mention)
            opened = [p for p in first.feed(mention) if p.kind is PageKind.OPENED]
            if opened:
                following = mentions[n + 1]
                break
        assert first.learning_pending
        if then == "snapshot":
            assert learned(first) == learned(inline)
        elif then == "feed":
            inline.feed(following)
            first.feed(following)
            assert learned(first) == learned(inline)
        else:
            incident = opened[0].incident.id
            assert first.false_alarm(incident) and inline.false_alarm(incident)
            assert learned(first) == learned(inline)
        assert not first.learning_pending and gc.isenabled()


def test_a_close_that_fails_after_judging_still_learns_and_lets_the_collector_go() -> None:
    """A bug in the rules, after the detectors judged: the failure reaches the caller and the
    bucket is learned once all the same, as it was when learning came first."""
    inline, first = demo_pipeline(pages_first=False), demo_pipeline(pages_first=True)
    mentions = demo_mentions()
    for pipeline in (inline, first):
        evaluate = pipeline.engine.evaluate

        def failing(signal: object, evaluate: object = evaluate) -> list[object]:
            raise RuntimeError("a bug")

        for mention in mentions:
            buckets = pipeline.stats.buckets
            pipeline.engine.evaluate = failing  # type: ignore[assignment,method-assign]
            try:
                pipeline.feed(mention)
            except RuntimeError:
                assert pipeline.stats.buckets > buckets
                break
            finally:
                pipeline.engine.evaluate = evaluate  # type: ignore[method-assign]
        assert gc.isenabled() is (pipeline is inline)
    first.learn_pending()
    assert learned(first) == learned(inline) and gc.isenabled()


async def test_the_daemon_queues_a_close_s_pages_before_it_learns(tmp_path: Path) -> None:
    """In the daemon each opened page is queued while its bucket is still to be learned, and
    every close is learned by the end, with the collector on."""
    stream = tmp_path / "m.jsonl"
    write_stream(stream, hours=24, surge_at=20)
    settings = settings_for(tmp_path, stream)
    store = await Store.open(tmp_path / "s.db")
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), AngryScorer())
    daemon = Daemon(pipeline, [ReplaySource(stream)], [Recorder()], store, queue_size=10)
    pending_when_queued: list[bool] = []
    dispatch = daemon.dispatcher.dispatch

    async def queued(page: Page) -> None:
        if page.kind is PageKind.OPENED:
            pending_when_queued.append(pipeline.learning_pending)
        await dispatch(page)

    daemon.dispatcher.dispatch = queued  # type: ignore[method-assign]
    try:
        await daemon.run(exit_when_sources_end=True)
    finally:
        await store.close()
    assert pending_when_queued and all(pending_when_queued)
    assert not pipeline.learning_pending and gc.isenabled()
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    metrics = generate_latest(registry).decode()
    (closes,) = re.findall(r"crisiswatch_bucket_close_seconds_count (\d+)", metrics)
    (learned,) = re.findall(r"crisiswatch_learning_seconds_count (\d+)", metrics)
    assert int(learned) > int(closes) > 20  # each close's, and the stream's end's
