"""Button clicks over Socket Mode: slack-sdk's real client, wired as the daemon wires it,
against a fake Socket Mode server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from fake_slack import TOKEN
from fake_socket_mode import APP_TOKEN, FakeSocketMode

from crisiswatch.config import Brand, LiveSettings, Notify, Route, Settings, Slack
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Mention, Page, ScoredMention
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.notify.dispatch import Dispatcher
from crisiswatch.notify.slack_runtime import slack_running
from crisiswatch.store import Store

PageFactory = Callable[..., Page]
ANGRY = "the kestrel atm swallowed my card, worst night ever"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSocketMode]:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    server = FakeSocketMode()
    await server.start()
    yield server
    await server.close()


def settings(fake: FakeSocketMode, brand: Brand) -> LiveSettings:
    slack = Slack(enabled=True, base_url=fake.base_url, interactivity="socket")
    return LiveSettings(
        Settings(
            brands=[brand],
            routes={"default": Route(channel="#crisis")},
            notify=Notify(console=False, slack=slack),
        )
    )


def block_actions(action_id: str, value: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U0ALICE"},
        "actions": [{"action_id": action_id, "value": value}],
    }


async def notes(fake: FakeSocketMode, count: int) -> list[str]:
    """The thread notes posted, once there are `count` of them (the last step of a click)."""
    async with asyncio.timeout(2):
        while True:
            found = [
                c.args["text"] for c in fake.ok_calls("chat.postMessage") if "thread_ts" in c.args
            ]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)


class TestSocketMode:
    async def test_clicks_are_acknowledged_and_reach_store_and_model(
        self, fake: FakeSocketMode, store: Store, brand: Brand, make_page: PageFactory
    ) -> None:
        """Acknowledge, then Not negative on a sample post: each envelope is acknowledged at
        once, both clicks are recorded, and the model's P(negative) of that post drops."""
        mention = Mention("x:9", "x", datetime(2024, 3, 1, tzinfo=UTC), ANGRY, author="rhys")
        page = make_page(samples=(ScoredMention(mention, "kestrel", (), 0.92),))
        incident = page.incident.id
        model = SentimentModel.load_default()
        before = model.negative_one(ANGRY)
        value = orjson.dumps({"incident": incident, "mention": "x:9"}).decode()
        async with slack_running(settings(fake, brand), store, SeriesHistory(300), model) as run:
            [slack] = run.notifiers
            await Dispatcher([slack], store).dispatch(page)
            acks = [
                await fake.send("interactive", block_actions("acknowledge", incident)),
                await fake.send("interactive", block_actions("not_negative:0", value)),
            ]
            found = await notes(fake, 2)
        assert acks == [{"envelope_id": "env-1"}, {"envelope_id": "env-2"}]
        assert [(a, u, m) for _, a, u, m in await store.clicks(incident)] == [
            ("acknowledge", "U0ALICE", None),
            ("not_negative", "U0ALICE", "x:9"),
        ]
        assert model.negative_one(ANGRY) < before
        assert "✔️ Acknowledged by <@U0ALICE>" in found  # the clicks are handled side by side
        assert fake.ok_calls("apps.connections.open") and fake.connections == 1

    async def test_other_envelopes_are_acknowledged_and_ignored(
        self, fake: FakeSocketMode, store: Store, brand: Brand
    ) -> None:
        """An events_api envelope is acknowledged (so Slack does not redeliver it), nothing else."""
        model = SentimentModel.load_default()
        async with slack_running(settings(fake, brand), store, SeriesHistory(300), model):
            ack = await fake.send("events_api", {"event": {"type": "app_mention"}})
        assert ack == {"envelope_id": "env-1"}
        assert await store.clicks("kestrel@20240301T1155Z") == []

    async def test_a_stop_while_slack_refuses_the_connection_closes_the_client(
        self,
        fake: FakeSocketMode,
        store: Store,
        brand: Brand,
        monkeypatch: pytest.MonkeyPatch,
        client_sessions: list[aiohttp.ClientSession],
    ) -> None:
        """slack-sdk's client tries a refused connection again and again: a stop meanwhile
        (startup cancelled) still closes it, and with it the aiohttp session it opened."""
        monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-revoked")

        async def start() -> None:
            model = SentimentModel.load_default()
            async with slack_running(settings(fake, brand), store, SeriesHistory(300), model):
                pytest.fail("Slack took a revoked app token")

        task = asyncio.create_task(start())
        try:
            async with asyncio.timeout(5):
                while not any(c.error for c in fake.calls):  # noqa: ASYNC110 (polling the fake)
                    await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            left_open = [session for session in client_sessions if not session.closed]
            assert client_sessions and left_open == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
