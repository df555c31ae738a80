"""HTTP ingest: other tools POST mention JSON lines to `/ingest`.

`Authorization: Bearer <INGEST_TOKEN>` is required (401 otherwise); a body over `max_bytes` is
refused (413). Each line is parsed like a replay line; the answer says how many were accepted and
which were rejected and why (line number and reason). Accepted mentions wait in a bounded queue,
so a slow pipeline slows the posters instead of dropping mentions. The answer is given only once
the reader (the daemon's pump) has taken the last of them, so they are in the pipeline's queue,
which a stop drains: a stop never loses mentions it answered for. A request still waiting when
the source stops is answered 503 (send it again). A poster may send a mention again: the
pipeline drops ids it has seen.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from crisiswatch.config import HttpIngestSettings
from crisiswatch.domain import Mention
from crisiswatch.mentions import MentionError, parse_mention
from crisiswatch.ops.listener import DEFAULT_LIMITS, Limits, serving
from crisiswatch.sources.resilience import Health, HealthSnapshot

log = structlog.get_logger(__name__)
SHUTDOWN_GRACE = 5.0  # seconds a request still being read may take once the source stops
STOPPING = "crisiswatch is stopping: send these lines again (mentions it already has count once)"
REASONS_TOLD = 100  # rejected lines answered with their reason; past it, only how many
YIELD_EVERY = 2_000  # lines parsed between two turns of the event loop


class HttpIngestSource:
    finite = False
    reports_progress = False

    def __init__(
        self,
        settings: HttpIngestSettings,
        *,
        token: str,
        queue_size: int = 10_000,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.name = "http_ingest"
        self.settings = settings
        self.limits = limits
        self.malformed = 0  # rejected lines, for the run summary
        self.address: tuple[str, int] | None = None  # where it listens, once started
        self.listening = asyncio.Event()
        self._stopped = asyncio.Event()  # the stream ended: waiting requests are answered 503
        self._token = f"Bearer {token}".encode()
        # each accepted mention, and with the last of a request the future its answer awaits
        self._queue: asyncio.Queue[tuple[Mention, asyncio.Future[None] | None]] = asyncio.Queue(
            maxsize=queue_size
        )
        self._health = Health(self.name, stall_after=math.inf)  # passive: never stalls

    def health(self) -> HealthSnapshot:
        return self._health.snapshot()

    async def stream(self) -> AsyncIterator[Mention]:
        app = web.Application(client_max_size=self.settings.max_bytes)
        app.router.add_post("/ingest", self._ingest)
        self._stopped.clear()
        async with serving(
            app,
            self.settings.listen,
            name=self.name,
            limits=self.limits,
            shutdown_timeout=SHUTDOWN_GRACE,
        ) as self.address:
            self.listening.set()
            log.info("http_ingest.listening", address=f"{self.address[0]}:{self.address[1]}")
            try:
                while True:
                    mention, taken = await self._queue.get()
                    yield mention
                    if taken is not None and not taken.done():  # the reader has it: answer
                        taken.set_result(None)
            finally:
                self._stopped.set()  # before the server's stop waits for the requests

    async def _ingest(self, request: web.Request) -> web.Response:
        # the header's own bytes (aiohttp decodes them as UTF-8 with surrogateescape): one not in
        # UTF-8 is a wrong token, not a 500 and a traceback for anyone who can reach the port
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._token):
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self.settings.max_bytes)
        except RequestPayloadError as exc:  # a body its Content-Encoding does not decode
            return _unreadable(request, exc)
        accepted: list[Mention] = []
        rejected: list[dict[str, object]] = []
        refused = 0
        for number, line in enumerate(body.splitlines(), start=1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a big body must not hold up the sources and Slack
            if not line.strip():
                continue
            try:
                accepted.append(parse_mention(line, default_source="http"))
            except MentionError as exc:
                refused += 1
                if len(rejected) < REASONS_TOLD:
                    rejected.append({"line": number, "reason": str(exc)})
        self.malformed += refused
        self._health.success()
        if rejected:
            log.warning("http_ingest.rejected", lines=refused, first=rejected[0])
        if not await self._hand_over(accepted):
            return web.json_response({"error": STOPPING}, status=503, headers={"Retry-After": "10"})
        answer: dict[str, object] = {"accepted": len(accepted), "rejected": rejected}
        if refused > len(rejected):
            answer["rejected_lines"] = refused  # the reasons above are the first ones only
        return web.json_response(answer)

    async def _hand_over(self, accepted: list[Mention]) -> bool:
        """Queue the mentions and wait until the reader has taken the last of them; False when
        the source stops first (then some of them may never be counted)."""
        if not accepted:
            return True
        handing = asyncio.ensure_future(self._queue_all(accepted))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((handing, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            handing.cancel()
            stopped.cancel()
        return handing.done() and not handing.cancelled()

    async def _queue_all(self, accepted: list[Mention]) -> None:
        taken = asyncio.get_running_loop().create_future()
        for mention in accepted[:-1]:
            await self._queue.put((mention, None))
        await self._queue.put((accepted[-1], taken))
        await taken


def _unreadable(request: web.Request, error: RequestPayloadError) -> web.Response:
    """400 for a body that cannot be decoded, on a connection closed after it: nothing more is
    read from the body (aiohttp would drain it after the answer, raise its error again and log
    a traceback: a log anyone who can reach the port could flood)."""
    request.content.feed_eof()
    answer = web.json_response({"error": f"body cannot be read: {error}"}, status=400)
    answer.force_close()
    return answer


def _too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"the body is over the limit of {limit} bytes"}, status=413)
