"""HTTP ingest: good lines accepted, bad ones rejected with line and reason, 401 without or with
the wrong token, 413 over the size limit; what was answered 200 survives a SIGTERM, and a request
a stop cuts short is answered 503."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from crisiswatch.config import HttpIngestSettings, load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Mention
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.sources.http_ingest import REASONS_TOLD, HttpIngestSource
from crisiswatch.store import Store

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

    async def test_a_body_of_many_bad_lines_gets_a_short_answer(
        self, ingest: tuple[HttpIngestSource, str, list[Mention]]
    ) -> None:
        """The reasons of the first `REASONS_TOLD` rejected lines, then only how many: a body
        of bad lines had been answered with every reason, 35 times its own size."""
        source, url, _ = ingest
        status, answer = await post(url, b"\n".join([b"[", GOOD, *[b"1"] * 300]))
        rejected = answer["rejected"]
        assert status == 200 and answer["accepted"] == 1
        assert isinstance(rejected, list) and len(rejected) == REASONS_TOLD
        assert rejected[0]["line"] == 1 and rejected[1]["line"] == 3
        assert answer["rejected_lines"] == 301 and source.malformed == 301

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


async def test_a_token_not_in_utf8_is_a_wrong_token(
    ingest: tuple[HttpIngestSource, str, list[Mention]],
) -> None:
    """An Authorization header of bytes that are not UTF-8 is refused as a wrong token (401), not
    answered 500 with a traceback in the error log for anyone who can reach the port."""
    source, _, got = ingest
    assert source.address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", source.address[1])
    writer.write(
        b"POST /ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Length: " + str(len(GOOD)).encode() + b"\r\n\r\n" + GOOD
    )
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 401 ") and got == []


@pytest.mark.parametrize("body", [b"not gzip", bytes(range(256)) * 8])
async def test_a_body_its_encoding_does_not_decode_is_400_without_a_traceback(
    ingest: tuple[HttpIngestSource, str, list[Mention]],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
) -> None:
    """A body sent as gzip that is not: 400 saying why, no error logged (it had been a 500, and
    aiohttp's traceback once more as it drained the body), and the server goes on."""
    _, url, got = ingest
    with caplog.at_level(logging.WARNING):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url,
                data=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"},
            ) as response,
        ):
            status, answer = response.status, await response.json()
        assert status == 400 and "cannot be read" in str(answer["error"])
        assert await post(url, GOOD) == (200, {"accepted": 1, "rejected": []})
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    await asyncio.sleep(0.01)
    assert [m.id for m in got] == ["t:1"]


class SlowScorer:
    """A busy pipeline: a fraction of a millisecond a mention."""

    def negative_one(self, text: str) -> float:
        time.sleep(0.0005)
        return 0.1


def lines(count: int) -> bytes:
    return b"\n".join(
        orjson.dumps({"id": f"h:{n}", "created_at": "2026-03-02T10:00:00Z", "text": f"acme {n}"})
        for n in range(count)
    )


async def ingesting_daemon(tmp_path: Path, store: Store) -> tuple[Daemon, HttpIngestSource]:
    config = tmp_path / "config.yaml"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("rules:\n  - id: r\n    when: {min_count: 9999}\n")
    config.write_text("rules: [rules]\nbrands:\n  - id: acme\n    keywords: [acme]\n")
    settings = load_settings(config)
    source = HttpIngestSource(HttpIngestSettings(listen="127.0.0.1:0"), token=TOKEN)
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), SlowScorer())
    daemon = Daemon(pipeline, [source], [], store, queue_size=10, checkpoint_dir=tmp_path,
                    tick_seconds=0)  # fmt: skip
    return daemon, source


class TestStopping:
    async def test_sigterm_after_an_answer_loses_nothing(self, tmp_path: Path) -> None:
        """Every mention answered 200 is counted and its id saved, though SIGTERM comes at
        once after the answer while the pipeline is still busy."""
        store = await Store.open(tmp_path / "s.db")
        daemon, source = await ingesting_daemon(tmp_path, store)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await source.listening.wait()
        assert source.address is not None
        status, answer = await post(f"http://127.0.0.1:{source.address[1]}/ingest", lines(500))
        os.kill(os.getpid(), signal.SIGTERM)
        await run
        seen = await store.recent_seen(1_000)
        await store.close()
        assert status == 200 and answer["accepted"] == 500
        assert daemon.pipeline.stats.mentions == 500 and len(seen) == 500

    async def test_a_request_still_waiting_at_a_stop_is_answered_503(self, tmp_path: Path) -> None:
        """A request whose mentions the pipeline has not all taken when the daemon stops is
        answered 503 (send again), at once rather than holding up the stop."""
        store = await Store.open(tmp_path / "s.db")
        daemon, source = await ingesting_daemon(tmp_path, store)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await source.listening.wait()
        assert source.address is not None
        url = f"http://127.0.0.1:{source.address[1]}/ingest"
        posting = asyncio.create_task(post(url, lines(5_000)))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        daemon.stopping.set()
        await run
        status, answer = await posting
        await store.close()
        assert time.monotonic() - started < 2
        assert status == 503 and "send these lines again" in str(answer["error"])
