"""The demo replay through the daemon into a fake Slack: one message per incident, threads for
the rest, and nothing lost or doubled across a restart while Slack was down."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_slack import TOKEN, Call, FakeSlack

from crisiswatch.cli import DEMO_CONFIG, _serve
from crisiswatch.config import LiveSettings, Settings, load_settings
from crisiswatch.daemon import Daemon, RunSummary
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.notify.slack_runtime import slack_running
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.store import Store

CHANNEL = "#crisis-demo"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    server = FakeSlack()
    await server.start()
    yield server
    await server.close()


def demo_with_slack(fake: FakeSlack) -> Settings:
    settings = load_settings(DEMO_CONFIG)
    slack = settings.notify.slack.model_copy(
        update={"enabled": True, "base_url": fake.base_url, "interactivity": "none"}
    )
    notify = settings.notify.model_copy(update={"console": False, "slack": slack})
    return settings.model_copy(update={"notify": notify})


def top_level(fake: FakeSlack) -> list[Call]:
    return [
        c
        for c in fake.ok_calls("chat.postMessage")
        if "thread_ts" not in c.args and c.args["channel"] == CHANNEL
    ]


async def run_demo(settings: Settings, state: Path, drain_seconds: float) -> RunSummary:
    """The daemon over the demo replay, like `_serve`, with a chosen drain deadline."""
    store = await Store.open(state / "crisiswatch.sqlite3")
    try:
        model = SentimentModel.load_default()
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), model)
        replay = settings.sources.replay
        assert replay is not None
        async with slack_running(LiveSettings(settings), store, pipeline.history, model) as slack:
            daemon = Daemon(
                pipeline,
                [ReplaySource(replay.path)],
                slack.notifiers,
                store,
                queue_size=1_000,
                drain_seconds=drain_seconds,
            )
            return await daemon.run(exit_when_sources_end=True)
    finally:
        await store.close()


def assert_one_message_per_incident(fake: FakeSlack, summary: RunSummary) -> None:
    """Three incidents, three messages; every later page edits its message and replies in its
    thread; each incident ends resolved; no page failed."""
    posts = top_level(fake)
    assert len(posts) == 3
    threads = {c.args.get("thread_ts") for c in fake.ok_calls("chat.postMessage")} - {None}
    updates = fake.ok_calls("chat.update")
    message_ts = {c.args["ts"] for c in updates}
    assert threads == message_ts and len(message_ts) == 3
    replies = Counter(
        c.args["thread_ts"] for c in fake.ok_calls("chat.postMessage") if "thread_ts" in c.args
    )
    assert sum(replies.values()) == len(updates) == summary.pages_sent - 3
    final = {c.args["ts"]: c.args["blocks"][0]["text"]["text"] for c in updates}
    assert all(header.startswith("✅ Resolved") for header in final.values())
    assert fake.ok_calls("files.completeUploadExternal")  # charts went into threads
    assert summary.pages_failed == 0


class TestDemoIntoSlack:
    async def test_one_message_per_incident_with_threads(
        self, fake: FakeSlack, tmp_path: Path
    ) -> None:
        settings = demo_with_slack(fake)
        summary = await _serve(settings, load_rules(settings.rules, settings), [], tmp_path,
                               finite=True)  # fmt: skip
        assert_one_message_per_incident(fake, summary)

    @pytest.mark.usefixtures("full_disk")
    async def test_a_full_disk_pages_all_the_same(self, fake: FakeSlack, tmp_path: Path) -> None:
        """The state store cannot be written (its disk filled after the start): the same
        messages and threads reach Slack, and every page goes."""
        settings = demo_with_slack(fake)
        summary = await run_demo(settings, tmp_path, drain_seconds=10)
        assert summary.stats.pages > 3 and summary.pages_sent == summary.stats.pages
        assert_one_message_per_incident(fake, summary)

    async def test_restart_while_slack_was_down_neither_loses_nor_doubles(
        self, fake: FakeSlack, tmp_path: Path
    ) -> None:
        """Slack goes down mid-run and the daemon stops with pages queued; the next run with
        the same store sends them in order, editing the messages posted before."""
        settings = demo_with_slack(fake)
        fake.down_after = 4
        first = await run_demo(settings, tmp_path, drain_seconds=0.2)
        assert first.pages_failed > 0
        fake.down_after = None
        second = await run_demo(settings, tmp_path, drain_seconds=10)
        assert second.stats.mentions == 0  # the replay was all seen: only the outbox drained
        assert second.pages_failed == 0
        assert len(top_level(fake)) == 3
        assert first.pages_sent + second.pages_sent == first.stats.pages
        posted = {c.args["channel"]: c for c in top_level(fake)}
        assert len(posted) == 1
        threads = {
            c.args["thread_ts"] for c in fake.ok_calls("chat.postMessage") if "thread_ts" in c.args
        }
        assert threads == {c.args["ts"] for c in fake.ok_calls("chat.update")}
