"""HTTP ingest: good lines accepted, bad ones rejected with line and reason, 401 without or with
the wrong token, 413 over the size limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from crisiswatch.config import HttpIngestSettings
from crisiswatch.domain import Mention
from crisiswatch.sources.http_ingest import HttpIngestSource

TOKEN = "ingest-secret"
GOOD = b'{"id": "t:1", "created_at": "2026-03-02T10:00:00Z", "text": "acme bank is down"}'


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[HttpIngestSource, str, list[Mention]]]:
    source = HttpIngestSource(
        HttpIngestSettings(listen="127.0.0.1:0", max_bytes=2_048), token=TOKEN
    )
    got: list[Mention] = []

    async def read() -> None:
        async for mention in source.stream():
            got.append(mention)

    task = asyncio.create_task(read())
    await source.listening.wait()
    assert source.address is not None
    yield source, f"http://127.0.0.1:{source.address[1]}/ingest", got
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


class TestHttpIngest:
    async def test_accepts_good_lines_and_says_why_bad_ones_were_rejected(
        self, ingest: tuple[HttpIngestSource, str, list[Mention]]
    ) -> None:
        """Two good lines queued; a broken and an incomplete line reported by number."""
        source, url, got = ingest
        second = GOOD.replace(b"t:1", b"t:2")
        body = b"\n".join([GOOD, b"{not json", b"", b'{"id": "t:3", "text": "x"}', second])
        status, answer = await post(url, body)
        assert status == 200
        assert answer["accepted"] == 2
        rejected = answer["rejected"]
        assert isinstance(rejected, list)
        assert [r["line"] for r in rejected] == [2, 4]
        assert "not valid JSON" in rejected[0]["reason"]
        assert "created_at" in rejected[1]["reason"]
        await asyncio.sleep(0.01)
        assert [m.id for m in got] == ["t:1", "t:2"] and got[0].source == "http"
        assert source.malformed == 2 and source.health().last_success is not None

    @pytest.mark.parametrize("token", [None, "wrong"])
    async def test_refuses_without_the_right_token(
        self, ingest: tuple[HttpIngestSource, str, list[Mention]], token: str | None
    ) -> None:
        """No token or a wrong one: 401, nothing queued."""
        _, url, got = ingest
        status, answer = await post(url, GOOD, token)
        assert status == 401 and "token" in str(answer["error"])
        assert got == []

    async def test_refuses_a_body_over_the_limit(
        self, ingest: tuple[HttpIngestSource, str, list[Mention]]
    ) -> None:
        """Over `max_bytes`: 413, nothing queued."""
        _, url, got = ingest
        status, answer = await post(url, b"\n".join([GOOD] * 40))
        assert status == 413 and "limit" in str(answer["error"])
        assert got == []
