"""Checkpoints: learned state saved atomically, restored exactly, a bad file moved aside."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from crisiswatch import checkpoint
from crisiswatch.checkpoint import Checkpoint, CheckpointError
from crisiswatch.cli import DEMO_CONFIG, DEMO_DIR
from crisiswatch.config import load_settings
from crisiswatch.domain import Mention, Page
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, read_mentions
from crisiswatch.pipeline import Pipeline, PipelineStats
from crisiswatch.rules.loader import load_rules


def demo_mentions() -> list[Mention]:
    with open_lines(DEMO_DIR / "demo_mentions.jsonl.gz") as handle:
        return [m for m in read_mentions(handle) if isinstance(m, Mention)]


def fresh_pipeline() -> Pipeline:
    settings = load_settings(DEMO_CONFIG)
    return Pipeline(settings, load_rules(settings.rules, settings), SentimentModel.load_default())


def key(page: Page) -> tuple[str, str, str]:
    return (page.at.isoformat(), page.kind.value, page.incident.id)


class TestCheckpoint:
    def test_a_restored_daemon_pages_exactly_as_one_never_stopped(self, tmp_path: Path) -> None:
        """Stop mid-stream, checkpoint, restore into a new pipeline: the same pages follow."""
        mentions = demo_mentions()
        whole = fresh_pipeline()
        expected = [key(p) for m in mentions for p in whole.feed(m)]
        expected += [key(p) for p in whole.finish()]

        half = len(mentions) // 2  # mid-incident: day 2 around noon
        first = fresh_pipeline()
        got = [key(p) for m in mentions[:half] for p in first.feed(m)]
        saved = Checkpoint(datetime.now(UTC), first.snapshot(), None)
        checkpoint.save(tmp_path, saved)

        second = fresh_pipeline()
        loaded = checkpoint.load(tmp_path)
        assert loaded is not None
        second.restore(loaded.pipeline)
        second.deduper = first.deduper  # the store's seen ids restore this in the daemon
        got += [key(p) for m in mentions[half:] for p in second.feed(m)]
        got += [key(p) for p in second.finish()]
        assert got == expected and len(expected) > 5

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
        """A checkpoint from another format version is not trusted."""
        checkpoint.save(tmp_path, Checkpoint(datetime.now(UTC), {}, None))
        monkeypatch.setattr(checkpoint, "FORMAT", checkpoint.FORMAT + 1)
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
