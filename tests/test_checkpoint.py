"""Checkpoints: learned state saved atomically, restored exactly, a bad file moved aside."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crisiswatch import checkpoint
from crisiswatch.checkpoint import Checkpoint, CheckpointError
from crisiswatch.cli import DEMO_CONFIG, DEMO_DIR
from crisiswatch.config import load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.detect.signals import SignalDetector
from crisiswatch.domain import Bucket, Mention, Page, SeriesKey, Signal
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, read_mentions
from crisiswatch.pipeline import Pipeline, PipelineStats
from crisiswatch.rules.loader import load_rules
from crisiswatch.store import Store


def demo_mentions() -> list[Mention]:
    with open_lines(DEMO_DIR / "demo_mentions.jsonl.gz") as handle:
        return [m for m in read_mentions(handle) if isinstance(m, Mention)]


def fresh_pipeline() -> Pipeline:
    settings = load_settings(DEMO_CONFIG)
    return Pipeline(settings, load_rules(settings.rules, settings), SentimentModel.load_default())


def key(page: Page) -> tuple[str, str, str]:
    return (page.at.isoformat(), page.kind.value, page.incident.id)


class TestCheckpoint:
    @pytest.mark.parametrize("as_the_daemon", [False, True])
    def test_a_restored_daemon_pages_exactly_as_one_never_stopped(
        self, tmp_path: Path, as_the_daemon: bool
    ) -> None:
        """Stop mid-stream, checkpoint, restore into a new pipeline: the same pages follow;
        also when saved as the daemon does (a `Snapshot`, the history a frozen copy)."""
        mentions = demo_mentions()
        whole = fresh_pipeline()
        expected = [key(p) for m in mentions for p in whole.feed(m)]
        expected += [key(p) for p in whole.finish()]

        half = len(mentions) // 2  # mid-incident: day 2 around noon
        first = fresh_pipeline()
        got = [key(p) for m in mentions[:half] for p in first.feed(m)]
        with first.history.frozen() as history:
            picture = first.snapshot()
            if as_the_daemon:
                picture = checkpoint.Snapshot(picture, {"history": history})
            checkpoint.save(tmp_path, Checkpoint(datetime.now(UTC), picture, None))

        second = fresh_pipeline()
        loaded = checkpoint.load(tmp_path)
        assert loaded is not None
        second.restore(loaded.pipeline)
        second.deduper = first.deduper  # the store's seen ids restore this in the daemon
        got += [key(p) for m in mentions[half:] for p in second.feed(m)]
        got += [key(p) for p in second.finish()]
        assert got == expected and len(expected) > 5

    async def test_the_daemon_pickles_the_history_off_the_loop_as_it_was_at_the_start(
        self, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The bulk of a checkpoint, the chart history (44 of 49 MB at 200 brands), is pickled
        by a worker thread, not on the event loop (where it held /healthz, Slack's clicks and
        the sources up for 150-370 ms), and saved as it was when the checkpoint began, though
        the loop records into it meanwhile."""
        mentions = demo_mentions()
        pipeline = fresh_pipeline()
        for mention in mentions[: len(mentions) // 2]:
            pipeline.feed(mention)
        daemon = Daemon(pipeline, [], [], store, queue_size=10, checkpoint_dir=tmp_path)
        series, ring = max(pipeline.history._rings.items(), key=lambda item: item[1].newest)
        step = timedelta(seconds=pipeline.history.bucket_seconds)
        start = datetime.fromtimestamp(0, UTC) + (ring.newest + 1) * step  # its next bucket
        bucket = Bucket(series, start, start + step, 7, 7, 0, 0, 0, (), (), ())
        later = Signal(bucket, 0.1, 7.0, 9.0, 0.1, 0.2, 7)
        pickled_in: list[threading.Thread] = []
        pickling, resume = threading.Event(), threading.Event()
        getstate = SeriesHistory.__getstate__

        def watched(history: SeriesHistory) -> object:
            pickled_in.append(threading.current_thread())
            if threading.current_thread() is not threading.main_thread():
                pickling.set()
                resume.wait(10)
            return getstate(history)

        monkeypatch.setattr(SeriesHistory, "__getstate__", watched)
        saving = asyncio.create_task(daemon.checkpoint())
        await asyncio.to_thread(pickling.wait, 10)
        pipeline.history.record(later)  # the loop goes on meanwhile
        resume.set()
        assert await saving
        assert pickled_in and threading.main_thread() not in pickled_in
        span = (series, start + step, step)
        assert pipeline.history.window(*span).count == (7.0,)
        loaded = checkpoint.load(tmp_path)
        assert loaded is not None and math.isnan(loaded.pipeline["history"].window(*span).count[0])

    async def test_a_checkpoint_cancelled_while_written_holds_the_next_one_until_done(
        self, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint cancelled while its thread writes (APScheduler's shutdown cancels a
        running job, at a stop) ends only when that thread is done, so the stop's checkpoint
        never writes the same temporary file at once (a torn or failed checkpoint) nor does
        the loop record into the history the thread is pickling."""
        daemon = Daemon(fresh_pipeline(), [], [], store, queue_size=10, checkpoint_dir=tmp_path)
        save = checkpoint.save
        calls: list[str] = []
        writing, resume = threading.Event(), threading.Event()

        def held(directory: Path, saved: Checkpoint) -> int:
            calls.append("start")
            if len(calls) == 1:
                writing.set()
                resume.wait(10)
            size = save(directory, saved)
            calls.append("end")
            return size

        monkeypatch.setattr(checkpoint, "save", held)
        first = asyncio.create_task(daemon.checkpoint())
        await asyncio.to_thread(writing.wait, 10)
        first.cancel()
        await asyncio.wait([first], timeout=0.1)
        assert not first.done()  # waiting for its thread
        second = asyncio.create_task(daemon.checkpoint())
        resume.set()
        assert await second
        with pytest.raises(asyncio.CancelledError):
            await first
        assert calls == ["start", "end", "start", "end"]
        assert checkpoint.load(tmp_path) is not None

    def test_corrupt_checkpoint_is_moved_aside_loudly(self, tmp_path: Path) -> None:
        """Garbage in the file: logged as an error, kept aside for a post-mortem, no crash."""
        (tmp_path / checkpoint.FILE_NAME).write_bytes(checkpoint.MAGIC + b"\x80garbage")
        with capture_logs() as logs:
            assert checkpoint.load(tmp_path) is None
        (event,) = [e for e in logs if e["event"] == "checkpoint.moved_aside"]
        assert event["log_level"] == "error"
        assert not (tmp_path / checkpoint.FILE_NAME).exists()
        assert len(list(tmp_path.glob("checkpoint.bin.bad-*"))) == 1

    def test_incompatible_version_is_moved_aside(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint of a format this version does not read (a newer release's, say) is not
        trusted; one of the previous format (4) is read."""
        monkeypatch.setattr(checkpoint, "FORMAT", 4)
        checkpoint.save(tmp_path, Checkpoint(datetime.now(UTC), {"marker": 4}, None))
        monkeypatch.undo()
        loaded = checkpoint.load(tmp_path)
        assert loaded is not None and loaded.pipeline == {"marker": 4}
        monkeypatch.setattr(checkpoint, "FORMAT", checkpoint.FORMAT + 1)
        checkpoint.save(tmp_path, Checkpoint(datetime.now(UTC), {}, None))
        monkeypatch.undo()
        assert checkpoint.load(tmp_path) is None
        assert list(tmp_path.glob("checkpoint.bin.bad-*"))

    def test_full_disk_is_a_clear_error_and_keeps_the_old_checkpoint(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failed write says why and leaves the previous checkpoint whole."""
        old = Checkpoint(datetime(2026, 3, 2, tzinfo=UTC), {"marker": 1}, b"state")
        checkpoint.save(tmp_path, old)

        def full(*args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(checkpoint.os, "fsync", full)
        with pytest.raises(CheckpointError, match="No space left on device"):
            checkpoint.save(tmp_path, Checkpoint(datetime.now(UTC), {"marker": 2}, None))
        monkeypatch.undo()
        assert checkpoint.load(tmp_path) == old
        assert not list(tmp_path.glob(".*.tmp"))

    async def test_the_state_it_makes_is_its_owners_alone(self, tmp_path: Path) -> None:
        """Outside systemd (./var), a new state folder is made 0700 and the checkpoint 0600,
        whatever the umask: a checkpoint is a pickle, so whoever could write it could make it
        run their code as the daemon."""
        state = tmp_path / "var"
        checkpoint.save(state, Checkpoint(datetime.now(UTC), {"marker": 1}, None))
        leftover = state / f".{checkpoint.FILE_NAME}.tmp"  # a crash's, world-writable
        leftover.write_bytes(b"")
        leftover.chmod(0o666)
        checkpoint.save(state, Checkpoint(datetime.now(UTC), {"marker": 2}, None))
        assert (
            state.stat().st_mode & 0o777,
            (state / checkpoint.FILE_NAME).stat().st_mode & 0o777,
        ) == (0o700, 0o600)
        store = await Store.open(tmp_path / "other" / "state.db")
        await store.close()
        assert (tmp_path / "other").stat().st_mode & 0o777 == 0o700

    def test_no_checkpoint_is_a_fresh_start(self, tmp_path: Path) -> None:
        """A first start finds nothing and says nothing alarming."""
        assert checkpoint.load(tmp_path) is None


def test_counters_from_an_older_checkpoint_start_at_zero() -> None:
    """A checkpoint saved before a counter existed (`future`) restores with it at 0, so the
    first refusal or metrics scrape does not fail on a missing attribute."""
    saved = PipelineStats(mentions=3, late=1)
    state = saved.__reduce_ex__(5)[2]
    older = {name: value for name, value in state[1].items() if name != "future"}
    restored = pickle.loads(pickle.dumps(PipelineStats()))
    restored.__setstate__((None, older))
    assert (restored.mentions, restored.late, restored.future) == (3, 1, 0)


def test_a_series_key_restores_in_a_process_with_another_hash_seed() -> None:
    """A key hashes once and keeps its hash, so the hash must not travel in a checkpoint: a
    string's hash differs between processes, and a restored detector or rule state keyed by a
    stale hash would never be found again."""
    saved = pickle.dumps({SeriesKey("acme", "outage", "x-only"): 7})
    for seed in ("1", "2"):
        found = subprocess.run(
            [sys.executable, "-c", RESTORE_AND_FIND],
            input=saved,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert found.stdout.strip() == b"7"


RESTORE_AND_FIND = """
import pickle, sys
from crisiswatch.domain import SeriesKey
print(pickle.load(sys.stdin.buffer)[SeriesKey("acme", "outage", "x-only")])
"""

# {SeriesKey("acme", "outage", "x-only"): 7} as the release before the key kept its hash
# pickled it: the key's fields' values as its state
EARLIER_KEY = (
    b"\x80\x05\x95J\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x12crisiswatch.domain\x94\x8c\tSeriesKey"
    b"\x94\x93\x94)\x81\x94]\x94(\x8c\x04acme\x94\x8c\x06outage\x94\x8c\x06x-only\x94ebK\x07s."
)


def test_a_series_key_from_an_earlier_checkpoint_is_found() -> None:
    restored = pickle.loads(EARLIER_KEY)
    assert restored[SeriesKey("acme", "outage", "x-only")] == 7
    assert list(restored) == [SeriesKey("acme", "outage", "x-only")]


def test_detectors_from_an_older_checkpoint_have_accepted_nothing() -> None:
    """Detectors saved before they remembered the buckets said to be no alarm restore as
    having accepted none, so the next False alarm is learned."""
    detector = SignalDetector(300)
    detector.prepare([SeriesKey("acme")])
    older = {name: value for name, value in vars(detector).items() if name != "_accepted"}
    restored = SignalDetector.__new__(SignalDetector)
    restored.__setstate__(older)
    assert restored._accepted == {}
    assert restored._series.keys() == {SeriesKey("acme")}
