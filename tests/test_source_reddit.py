"""The Reddit source with the real asyncpraw against a fake Reddit: every post and comment once,
across faults, slow answers and a restart; waits as the headers say; authors' karma as reach,
looked up once per author; a failing source reports itself stalled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asyncprawcore import rate_limit, sessions
from fake_reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit
from local_server import running
from source_testing import NOW, Clock, take, until_current
from structlog.testing import capture_logs

from crisiswatch.config import Brand, RedditSettings
from crisiswatch.domain import Mention
from crisiswatch.frontiers import START
from crisiswatch.retry import Backoff
from crisiswatch.sources import Progress, reddit
from crisiswatch.sources.reddit import KARMA_FOR, RedditSource
from crisiswatch.store import Store

pytestmark = [
    pytest.mark.filterwarnings(  # asyncprawcore 4 still uses aiohttp's BasicAuth
        "ignore:BasicAuth is deprecated:DeprecationWarning",
        "ignore:The .auth. parameter is deprecated:DeprecationWarning",
    ),
]
BRAND = Brand(id="acme", keywords=["acme bank"])


@pytest.fixture(autouse=True)
def no_library_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncprawcore's own retry and rate-limit waits sleep for real; the tests skip them."""

    async def no_delay(self: Any) -> None:
        return None

    monkeypatch.setattr(sessions.FiniteRetryStrategy, "_sleep_seconds", lambda self: None)
    monkeypatch.setattr(rate_limit.RateLimiter, "delay", no_delay)


class GatedClock(Clock):
    """A fake clock whose sleeps wait until `gate` opens, then return at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0  # sleeps waiting for the gate

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        self.now += seconds


fake = running(FakeReddit)


def source(
    fake: FakeReddit,
    store: Store | None,
    clock: Clock,
    *,
    request_timeout: float = 5.0,
    karma_timeout: float = 5.0,
    **settings: Any,
) -> RedditSource:
    fields: dict[str, Any] = {
        "user_agent": "test:crisiswatch:1.0 (by u/tests)",
        "subreddits": ["brand"],
        "search": False,
        "oauth_url": fake.url,
        "reddit_url": fake.url,
    }
    fields.update(settings)
    made = RedditSource(
        RedditSettings(**fields), [BRAND], store, client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET, clock=clock, sleep=clock.sleep, poll_every=0.0,
        rand=lambda: 0.5, request_timeout=request_timeout, karma_timeout=karma_timeout,
    )  # fmt: skip
    return made


class TestRedditSource:
    async def test_every_post_and_comment_once_across_faults_and_a_restart(
        self, fake: FakeReddit, tmp_path: Path
    ) -> None:
        """429s, 500s, bad JSON, a dropped connection and an expired token lose nothing; a
        restart resumes from the saved cursors without repeating."""
        fake.post("existed before the first start", created=NOW - 600)
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()
        expected: list[str] = []

        async def traffic() -> None:
            await fake.listening()
            for n in range(6):
                post = fake.post(f"acme bank post {n}", created=NOW + n)
                expected.extend([post, fake.comment(f"re {n}", created=NOW + n, parent=post)])
                if n == 1:
                    fake.fail("/r/brand/new", status=429, headers={"retry-after": "7"})
                    fake.fail("/r/brand/comments", status=500, times=3)
                if n == 2:
                    fake.fail("/r/brand/new", malformed=True)
                    fake.fail("/r/brand/comments", drop=True)
                if n == 3:
                    fake.expire_token()
                await asyncio.sleep(0.03)

        try:
            first = await take(source(fake, store, clock), 12, traffic)
            for n in range(3):  # posted while crisiswatch was down
                post = fake.post(f"while down {n}", created=NOW + 100 + n)
                expected.extend([post, fake.comment("re", created=NOW + 100, parent=post)])
            second = await take(source(fake, store, clock), 6)
        finally:
            await store.close()
        ids = [m.id for m in first + second]
        assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
        assert all(fault.times == 0 for fault in fake.faults)  # every fault was met
        assert 7.0 in clock.sleeps  # the 429's Retry-After
        assert fake.tokens_issued >= 2
        comment = next(m for m in first if m.id.startswith("reddit:t1_"))
        assert comment.in_reply_to_author == "alice" and comment.author == "bob"
        assert comment.url and comment.url.startswith("https://www.reddit.com/r/brand/")

    @pytest.mark.parametrize("existing", [0, 1])
    async def test_a_first_start_that_fails_early_loses_no_post(
        self, fake: FakeReddit, existing: int
    ) -> None:
        """On a first start what already exists is not new: its newest post (or, in an empty
        subreddit, the start of it) is the stream's position at once, so when a listing fails
        before any post has been yielded, the restarted stream still delivers what was posted
        since the first listing."""
        for n in range(existing):
            fake.post(f"existed before the first start {n}", created=NOW - 600)
        expected: list[str] = []

        async def traffic() -> None:
            await fake.listening("/r/brand/new")  # the first listing: what exists is known
            fake.fail("/r/brand/new", status=429)  # the next one is rate limited...
            expected.append(fake.post("acme bank took my money", created=NOW + 5))  # meanwhile

        got = await take(source(fake, None, Clock()), 1, traffic)
        assert [m.id for m in got] == expected
        assert fake.faults[0].times == 0

    async def test_a_restart_whose_cursor_post_was_removed_pages_back_to_it(
        self, fake: FakeReddit, tmp_path: Path
    ) -> None:
        """Reddit lists nothing after a removed post. When the stream's saved position was
        removed while crisiswatch was down, what came after it is paged for backwards from the
        newest, so the 150 posts of the downtime all arrive, not just the newest 100."""
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()

        async def one_post() -> None:
            await fake.listening()
            fake.post("acme bank is down", created=NOW)

        try:
            first = await take(source(fake, store, clock), 1, one_post)
            fake.things = [t for t in fake.things if f"reddit:{t['data']['name']}" != first[0].id]
            posted = [fake.post(f"outage {n}", created=NOW + 60 + n) for n in range(150)]
            second = await take(source(fake, store, clock), 150)
        finally:
            await store.close()
        assert [m.id for m in second] == posted

    async def test_a_catch_up_of_several_listings_is_current_only_after_the_last(
        self, fake: FakeReddit, tmp_path: Path
    ) -> None:
        """A listing after the cursor holds at most 100 items, the oldest first: after a
        downtime with 250 posts the stream is still behind after the first listing (bucket
        closes would release and the other 150 come too late); it says it is current only
        once a listing came back short, after every post of the downtime."""
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()

        async def one_post() -> None:
            await fake.listening()
            fake.post("acme bank is fine", created=NOW)

        try:
            await take(source(fake, store, clock), 1, one_post)
            posted = [fake.post(f"outage {n}", created=NOW + 60 + n) for n in range(250)]
            stream = source(fake, store, clock).stream()
            try:
                seen = await until_current(stream)
            finally:
                await stream.aclose()
        finally:
            await store.close()
        assert [m.id for m in seen if isinstance(m, Mention)] == posted

    async def test_paging_back_stops_at_its_bound_and_says_so(
        self, fake: FakeReddit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Paging back stops after `CATCH_UP` items (Reddit lists about 1,000 back at most),
        and the log says what may be missing."""
        monkeypatch.setattr(reddit, "CATCH_UP", 120)
        store = await Store.open(tmp_path / "s.db")
        try:
            await store.save_cursors("reddit", {"submissions": "t3_zz", "comments": "t1_zz"})
            posted = [fake.post(f"outage {n}", created=NOW + n) for n in range(150)]
            with capture_logs() as logs:
                got = await take(source(fake, store, Clock()), 120)
        finally:
            await store.close()
        assert [m.id for m in got] == posted[-120:]
        assert any(e["event"] == "reddit.catch_up_limit" and e["stream"] == "submissions"
                   for e in logs)  # fmt: skip

    async def test_search_finds_brand_posts_site_wide(self, fake: FakeReddit) -> None:
        """Search polls find posts anywhere, each once, though every poll sees them again."""
        clock = Clock()
        ids = [fake.post(f"acme bank {n}", created=NOW - 60 + n, sub="elsewhere") for n in range(3)]
        src = source(fake, None, clock, subreddits=[], search=True, search_every="30s")
        got = await take(src, 3)
        assert [m.id for m in got] == ids

    async def test_malformed_fields_read_as_absent_and_an_unreadable_post_is_skipped(
        self, fake: FakeReddit
    ) -> None:
        """A score of "lots" or 1e20, a body that is no string: read as absent; a post without a
        creation time is skipped, logged, and the stream goes on past it (it had failed the
        listing on every retry, so nothing after it ever came)."""
        ids: list[str] = []

        async def traffic() -> None:
            await fake.listening()
            ids.extend(fake.post(f"acme bank {n}", created=NOW + n) for n in range(4))
            data = [thing["data"] for thing in fake.things[-4:]]
            data[0]["score"] = "lots"
            data[1].update(score=1e20, selftext=["no", "string"])
            data[2]["created_utc"] = None

        with capture_logs() as logs:
            got = await take(source(fake, None, Clock()), 3, traffic)
        assert [m.id for m in got] == [ids[0], ids[1], ids[3]]
        assert [m.engagement for m in got] == [4, 4, 16]
        assert got[1].text == "acme bank 1"
        skipped = [e["item"] for e in logs if e["event"] == "reddit.item_unreadable"]
        assert skipped == [ids[2].removeprefix("reddit:")]

    async def test_it_is_behind_until_every_stream_and_search_has_fetched_once(
        self, fake: FakeReddit
    ) -> None:
        """From the start the source is behind (bucket closes wait for it); only once its
        submissions, comments and every brand's search have each fetched up to the present,
        and handed over what they found, does it say it is current. A listing that fails makes
        it behind again, since that stream's last listing began."""
        found = fake.post("acme bank elsewhere", created=NOW - 60, sub="elsewhere")
        fake.fail("/r/brand/comments", status=503, times=2)
        clock = Clock()
        src = source(fake, None, clock, search=True, search_every="30s")
        stream = src.stream()
        try:
            first = await until_current(stream)
            fake.fail("/r/brand/new", status=503, times=5)  # past asyncprawcore's own retries
            listed_at = clock.now
            again = await until_current(stream)
        finally:
            await stream.aclose()
        assert [m.id for m in first if isinstance(m, Mention)] == [found]
        assert fake.faults[0].times == 0  # the comments listing answered 503 twice first
        assert [p for p in first if isinstance(p, Progress)] == [
            Progress("reddit", START),
            Progress("reddit", None),
        ]
        behind = [p for p in again if isinstance(p, Progress)]
        assert len(behind) == 2 and behind[0].behind_since is not None
        assert START < behind[0].behind_since <= datetime.fromtimestamp(listed_at, UTC)

    async def test_rate_limit_waits_for_the_reset_header(self, fake: FakeReddit) -> None:
        """A 429 with `x-ratelimit-reset` waits exactly that long; without headers it backs off."""
        clock = Clock()
        fake.fail("/r/brand/new", status=429, headers={"x-ratelimit-reset": "42"})
        fake.fail("/r/brand/new", status=429)

        async def later() -> None:
            await fake.listening("/r/brand/new")
            fake.post("acme bank after the limit", created=NOW)

        src = source(fake, None, clock)
        await take(src, 1, later)
        assert 42.0 in clock.sleeps
        assert Backoff(rand=lambda: 0.5).next() in clock.sleeps

    async def test_a_failing_source_reports_itself_stalled(self, fake: FakeReddit) -> None:
        """Every request failing: failures count up and, after `stall_after`, it is stalled."""
        clock = Clock()
        fake.fail("/r/brand", status=503, times=1_000)
        src = source(fake, None, clock)
        stream = src.stream()

        async def drain() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(drain())
        async with asyncio.timeout(5):
            while src.health().stalled_for < 400:  # noqa: ASYNC110 (polling a fake clock)
                await asyncio.sleep(0.01)
        health = src.health()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.aclose()
        assert health.stalled and health.consecutive_failures >= 3
        assert health.last_error is not None and "ServerError" in health.last_error
        assert "stalled" in health.describe()

    async def test_a_slow_listing_times_out_and_is_fetched_again(self, fake: FakeReddit) -> None:
        """A listing answered after the timeout is an error like any other: the stream backs
        off and fetches again from its cursor; every post arrives once; health shows both."""
        clock = Clock()
        expected: list[str] = []

        async def traffic() -> None:
            await fake.listening()
            expected.append(fake.post("acme bank before", created=NOW))
            await asyncio.sleep(0.05)
            fake.fail("/r/brand/new", delay=0.5)
            expected.extend(fake.post(f"acme bank during {n}", created=NOW + n) for n in range(2))

        src = source(fake, None, clock, request_timeout=0.2)
        got = await take(src, 3, traffic)
        ids = [m.id for m in got]
        assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
        assert fake.faults[0].times == 0
        health = src.health()
        assert health.last_error is not None and "did not answer within 0.2s" in health.last_error
        assert health.consecutive_failures == 0
        assert health.last_success and health.last_error_at
        assert health.last_success > health.last_error_at

    async def test_closing_the_stream_ends_its_loops_before_the_client_closes(
        self,
        fake: FakeReddit,
        monkeypatch: pytest.MonkeyPatch,
        client_sessions: list[aiohttp.ClientSession],
    ) -> None:
        """Closing the stream (as the daemon does when it stops) ends every fetch loop before
        asyncpraw's client is closed. A loop whose wait ended as the client closed would send
        its next request through a new aiohttp session (asyncprawcore opens one when its own
        is closed) that nobody closes: an `Unclosed client session` warning, at some later
        garbage collection, and a session lost on every stop."""
        real_client = reddit.reddit_client
        clock = GatedClock()

        def client(*args: Any, **kwargs: Any) -> Any:
            made = real_client(*args, **kwargs)
            close = made.close

            async def closing() -> None:
                clock.gate.set()  # the loops' waits end as the client closes
                await close()

            made.close = closing
            return made

        monkeypatch.setattr(reddit, "reddit_client", client)
        stream = source(fake, None, clock).stream()
        try:
            await until_current(stream)
            async with asyncio.timeout(5):  # each stream listed once, and waits to list again
                while clock.waiting < 2:  # noqa: ASYNC110 (polling a fake clock)
                    await asyncio.sleep(0.005)
            requested = len(fake.requests)
            await stream.aclose()
            await asyncio.sleep(0.1)  # time for a loop still running to list again
            assert fake.requests[requested:] == []
            assert [session.closed for session in client_sessions] == [True]  # the client's own
        finally:
            await stream.aclose()


class TestReach:
    async def test_karma_is_reach_looked_up_once_a_day_per_author(
        self, fake: FakeReddit, tmp_path: Path
    ) -> None:
        """An author's link + comment karma is the reach of each post, with one lookup per
        author however many posts; a day later it is looked up again."""
        fake.user("alice", link_karma=1_000, comment_karma=234)
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()
        src = source(fake, store, clock)

        async def burst() -> None:
            await fake.listening()
            for n in range(5):
                post = fake.post(f"acme bank {n}", created=NOW + n)
                fake.comment(f"re {n}", created=NOW + n, parent=post)

        try:
            first = await take(src, 10, burst)
            clock.now += KARMA_FOR
            fake.post("acme bank a day later", created=clock.now)
            second = await take(src, 1)
        finally:
            await store.close()
        reach = {(m.author, m.author_followers) for m in first + second}
        assert reach == {("alice", 1_234), ("bob", 3)}  # bob has no page: his comment's score
        lookups = [path for path in fake.requests if path.startswith("/user/")]
        assert sorted(lookups) == ["/user/alice/about/"] * 2 + ["/user/bob/about/"]

    async def test_a_failed_lookup_falls_back_to_the_score(self, fake: FakeReddit) -> None:
        """A 404, a 500 or a slow answer to the karma lookup: the post's score is the reach and
        the mention arrives once, at once; lookups pause for a minute after a failure, and a
        500 is asked again for the author's next post after that."""
        for name in ("carol", "erin"):
            fake.user(name, link_karma=50, comment_karma=7)
        fake.fail("/user/carol/about", status=500, times=3)  # asyncprawcore tries 3 times
        fake.fail("/user/erin/about", delay=0.5)
        clock = Clock()
        expected: list[str] = []

        async def post(author: str, *, a_minute_later: bool = False) -> None:
            """Post, and return once the source has handled it (lookup included): the stream
            asks for its next listing only after it has passed on the one before."""
            if a_minute_later:
                clock.now += 60.0
            listed = len(fake.listed)
            expected.append(fake.post("acme bank", created=NOW, author=author))
            await fake.listing_served(after=listed, times=2, path="/r/brand/new")

        async def traffic() -> None:
            await fake.listening()
            await post("dave")  # no such user: a definite answer, no pause
            await post("carol")  # 500s: lookups pause for a minute
            await post("frank")  # in the pause: not looked up
            await post("erin", a_minute_later=True)  # too slow: another pause
            await post("carol", a_minute_later=True)

        src = source(fake, None, clock, karma_timeout=0.2)
        got = await take(src, 5, traffic)
        assert [m.id for m in got] == expected
        assert [m.author_followers for m in got] == [12, 12, 12, 12, 57]
        assert [m.engagement for m in got] == [16] * 5  # score 12 + 4 comments
        lookups = [path for path in fake.requests if path.startswith("/user/")]
        assert "/user/frank/about/" not in lookups and lookups.count("/user/carol/about/") == 4
        assert all(fault.times == 0 for fault in fake.faults)
        assert src.health().consecutive_failures == 0 and src.health().last_error is None

    async def test_lookups_are_budgeted_per_minute(self, fake: FakeReddit) -> None:
        """Past `karma_per_minute` lookups, new authors' posts take their score at once and no
        request is made; a minute later lookups resume."""
        for n in range(5):
            fake.user(f"user{n}", link_karma=100 * (n + 1), comment_karma=0)
        clock = Clock()

        async def surge() -> None:
            await fake.listening("/r/brand/new")
            for n in range(4):
                fake.post("acme bank is down", created=NOW, author=f"user{n}")

        src = source(fake, None, clock, karma_per_minute=2)
        first = await take(src, 4, surge)
        clock.now += 60
        fake.post("acme bank still down", created=NOW + 60, author="user4")
        second = await take(src, 1)
        assert [m.author_followers for m in first + second] == [100, 200, 12, 12, 500]
        lookups = [path for path in fake.requests if path.startswith("/user/")]
        assert lookups == ["/user/user0/about/", "/user/user1/about/", "/user/user4/about/"]

    async def test_over_budget_a_known_author_keeps_the_karma_last_seen(
        self, fake: FakeReddit
    ) -> None:
        """A big account whose karma is a day old is not shrunk to its post's score when the
        budget is spent: the karma last known stands in until it can be looked up."""
        fake.user("big", link_karma=2_000_000, comment_karma=0)
        fake.user("new", link_karma=300, comment_karma=0)
        clock = Clock()

        async def first() -> None:
            await fake.listening("/r/brand/new")
            fake.post("acme bank", created=NOW, author="big")

        src = source(fake, None, clock, karma_per_minute=1)
        got = await take(src, 1, first)
        clock.now += KARMA_FOR
        fake.post("acme bank again", created=clock.now, author="new")  # spends the budget
        fake.post("acme bank is down", created=clock.now, author="big")
        got += await take(src, 2)
        assert [m.author_followers for m in got] == [2_000_000, 300, 2_000_000]
        lookups = [path for path in fake.requests if path.startswith("/user/")]
        assert lookups == ["/user/big/about/", "/user/new/about/"]
