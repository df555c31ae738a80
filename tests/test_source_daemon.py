"""Live sources in the daemon: the clock closes buckets (replays never tick), a stalled source
reaches ops, and `crisiswatch run --config` streams Reddit and X (fakes) into the pipeline."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fake_reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit
from fake_x import TOKEN, FakeX

from crisiswatch.config import Settings, load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Mention
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.sources.resilience import HealthSnapshot
from crisiswatch.store import Store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class Calm:
    def negative_one(self, text: str) -> float:
        return 0.1


class QuietFeed:
    """Yields its mentions, then stays open like a quiet live feed."""

    name = "live"
    finite = False
    reports_progress = False

    def __init__(self, mentions: list[Mention], stalled_for: float = 0.0) -> None:
        self.mentions = mentions
        self.stalled_for = stalled_for

    async def stream(self) -> AsyncIterator[Mention]:
        for mention in self.mentions:
            yield mention
        await asyncio.Event().wait()

    def health(self) -> HealthSnapshot:
        return HealthSnapshot("live", None, "ServerError: 503", None, 4, self.stalled_for,
                              self.stalled_for >= 300)  # fmt: skip


class Ops:
    name = "ops"

    def __init__(self) -> None:
        self.notices: list[str] = []

    async def send(self, page: object) -> None:
        return None

    async def notice(self, text: str) -> None:
        self.notices.append(text)


def settings(tmp_path: Path, sources: str = "") -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: [{ROOT / 'rules'}]\nstate_dir: {tmp_path / 'state'}\n"
        "brands:\n  - id: acme\n    keywords: [acme bank]\n" + sources,
        encoding="utf-8",
    )
    return load_settings(config)


def mention(n: int, at: datetime) -> Mention:
    return Mention(id=f"x:{n}", source="x", created_at=at, text="acme bank is fine")


async def run_briefly(daemon: Daemon, seconds: float) -> None:
    task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
    await asyncio.sleep(seconds)
    daemon.stopping.set()
    await task


class TestLiveTime:
    async def test_the_clock_closes_buckets_when_no_mention_arrives(self, tmp_path: Path) -> None:
        """One mention, then silence: the tick closes its bucket by the wall clock."""
        deployment = settings(tmp_path)
        pipeline = Pipeline(deployment, load_rules(deployment.rules, deployment), Calm())
        store = await Store.open(tmp_path / "s.db")
        try:
            daemon = Daemon(
                pipeline, [QuietFeed([mention(1, T0)])], [], store, queue_size=10,
                tick_seconds=0.01, clock=lambda: T0 + timedelta(hours=1),
            )  # fmt: skip
            await run_briefly(daemon, 0.2)
        finally:
            await store.close()
        assert pipeline.stats.mentions == 1 and pipeline.stats.buckets > 0

    async def test_a_replay_never_ticks(self, tmp_path: Path) -> None:
        """Replay-only runs stay in event time: the clock is never read."""
        stream = tmp_path / "m.jsonl"
        stream.write_text(
            '{"id": "x:1", "created_at": "2026-03-02T12:00:00Z", "text": "acme bank"}\n'
        )
        deployment = settings(tmp_path)
        pipeline = Pipeline(deployment, load_rules(deployment.rules, deployment), Calm())

        def no_clock() -> datetime:
            raise AssertionError("a replay read the wall clock")

        store = await Store.open(tmp_path / "s.db")
        try:
            daemon = Daemon(pipeline, [ReplaySource(stream)], [], store, queue_size=10,
                            tick_seconds=0.001, clock=no_clock)  # fmt: skip
            summary = await daemon.run(exit_when_sources_end=True)
        finally:
            await store.close()
        assert summary.stats.mentions == 1


class TestSourceHealth:
    async def test_a_stalled_source_is_told_to_ops_once_then_its_recovery(
        self, tmp_path: Path
    ) -> None:
        """Stalled past `notice_after`: one notice naming the source and its error; recovered:
        one more."""
        deployment = settings(tmp_path)
        pipeline = Pipeline(deployment, [], Calm())
        source, ops = QuietFeed([], stalled_for=1_000), Ops()
        store = await Store.open(tmp_path / "s.db")
        try:
            daemon = Daemon(pipeline, [source], [ops], store, queue_size=10, notice_after=900)
            await daemon.check_health()
            await daemon.check_health()
            source.stalled_for = 0
            await daemon.check_health()
        finally:
            await store.close()
        assert len(ops.notices) == 2
        assert "live: stalled" in ops.notices[0] and "ServerError: 503" in ops.notices[0]
        assert ops.notices[1] == "crisiswatch source live recovered"


class TestRunWithLiveSources:
    async def test_run_config_streams_reddit_and_x_into_the_pipeline(self, tmp_path: Path) -> None:
        """`crisiswatch run --config` against the fakes: every post and tweet is counted once,
        and the cursors are saved when it stops."""
        reddit, x = FakeReddit(), FakeX()
        await reddit.start()
        await x.start()
        try:
            now = time.time()
            for n in range(3):
                reddit.post(f"acme bank thread {n}", created=now - 60 + n, sub="anywhere")
            alice = x.user("alice", 50)
            recent = datetime.fromtimestamp(now - 60, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            for n in range(4):
                x.tweet(f"acme bank tweet {n}", author=alice, created=recent)
            settings(
                tmp_path,
                "sources:\n  tick: 1s\n"
                f"  reddit: {{user_agent: 'test:crisiswatch:1.0 (by u/tests)', search_every: 1s,"
                f" oauth_url: '{reddit.url}', reddit_url: '{reddit.url}'}}\n"
                f"  x: {{api_url: '{x.url}', search_every: 1s}}\n"
                "notify: {console: false}\n",
            )
            env = {**os.environ, "REDDIT_CLIENT_ID": CLIENT_ID,
                   "REDDIT_CLIENT_SECRET": CLIENT_SECRET, "X_BEARER_TOKEN": TOKEN}  # fmt: skip
            env.pop("CREDENTIALS_DIRECTORY", None)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "crisiswatch", "run", "--config",
                str(tmp_path / "config.yaml"), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(15):
                while not (x.searches and any("search" in r for r in reddit.requests)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.5)  # a tick saves the seen ids and cursors
                process.send_signal(signal.SIGTERM)
                out, err = await process.communicate()
        finally:
            await reddit.close()
            await x.close()
        assert process.returncode == 0, err.decode()[-2000:]
        counted = re.search(r"stopped: (\d+) mentions counted, (\d+) duplicates", out.decode())
        assert counted is not None, out.decode()
        assert int(counted.group(1)) == 7
        store = await Store.open(tmp_path / "state" / "crisiswatch.sqlite3")
        try:
            assert "search:acme" in await store.cursors("reddit")
            assert "search:acme" in await store.cursors("x")
        finally:
            await store.close()
