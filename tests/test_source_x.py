"""The X source with tweepy's real async client against a fake X: recent search with `since_id`
delivers every tweet once across faults, slow answers and a restart, waits as the rate-limit
headers say, maps
authors and replies; the filtered stream reconnects and fills the gap from search."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fake_x import TOKEN, FakeX, iso
from local_server import running
from source_testing import NOW, Clock, take
from structlog.testing import capture_logs

from crisiswatch.config import Brand, Settings, XSettings
from crisiswatch.domain import Mention
from crisiswatch.pipeline import Pipeline, PipelineStats
from crisiswatch.retry import Backoff
from crisiswatch.sources.resilience import SourceSetupError
from crisiswatch.sources.x import RULE_TAG, XSource, to_mention
from crisiswatch.store import Store

CREATED = "2026-02-25T06:13:00.000Z"
BRAND = Brand(id="acme", keywords=["acme bank"], handles=["@AcmeBank"])


fake = running(FakeX)


def source(
    fake: FakeX,
    store: Store | None,
    clock: Clock,
    *,
    request_timeout: float = 5.0,
    brands: Sequence[Brand] = (BRAND,),
    **settings: Any,
) -> XSource:
    made = XSource(
        XSettings(api_url=fake.url, search_every="30s", **settings), brands, store,
        bearer_token=TOKEN, clock=clock, sleep=clock.sleep, rand=lambda: 0.5,
        request_timeout=request_timeout,
    )  # fmt: skip
    return made


class Calm:
    def negative_one(self, text: str) -> float:
        return 0.1


def counted(mentions: Sequence[Mention], brands: Sequence[Brand]) -> PipelineStats:
    """What the pipeline makes of `mentions` fed in the order the source yielded them."""
    pipeline = Pipeline(Settings(brands=list(brands), rules=[]), [], Calm())
    for mention in mentions:
        pipeline.feed(mention)
    return pipeline.stats


class TestRecentSearch:
    async def test_every_tweet_once_across_faults_and_a_restart(
        self, fake: FakeX, tmp_path: Path
    ) -> None:
        """Pages, 429s, a 500, bad JSON and a dropped connection lose nothing; after a restart
        `since_id` comes from the store and nothing repeats."""
        brand_id, alice = fake.user("AcmeBank", 90_000), fake.user("alice", 321)
        expected = [fake.tweet(f"acme bank {n}", author=alice, created=CREATED) for n in range(7)]
        path = "/2/tweets/search/recent"
        fake.fail(path, status=429, headers={"x-rate-limit-reset": str(int(NOW) + 42)})
        fake.fail(path, status=429)
        fake.fail(path, status=503)
        fake.fail(path, malformed=True)
        fake.fail(path, drop=True)
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()
        try:
            first = await take(source(fake, store, clock), 7)
            expected.append(
                fake.tweet("@AcmeBank awful", author=alice, created=CREATED, reply_to=brand_id)
            )
            second = await take(source(fake, store, clock), 1)
        finally:
            await store.close()
        ids = [m.id for m in first + second]
        assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
        assert all(fault.times == 0 for fault in fake.faults)
        assert 42.0 in clock.sleeps  # the reset header, to the second
        assert Backoff(rand=lambda: 0.5).wait(2) in clock.sleeps  # no header: back-off
        assert any("since_id" in query for query in fake.searches)
        reply = second[0]
        assert reply.in_reply_to_author == "AcmeBank" and reply.author == "alice"
        assert reply.author_followers == 321 and reply.lang == "en"
        assert reply.engagement == 6  # likes, reposts, replies and quotes; not impressions
        assert reply.url == f"https://x.com/alice/status/{reply.id.removeprefix('x:')}"

    async def test_malformed_fields_read_as_absent_and_an_unreadable_tweet_is_skipped(
        self, fake: FakeX
    ) -> None:
        """X's payload is untrusted too: followers "12k" or 1e20, a numeric username, a null
        `public_metrics`, a `note_tweet` that is a string read as absent, and a tweet without a
        usable time is skipped (logged). Before, each of them failed the whole poll on every
        retry, so no tweet of any brand came through again."""
        odd = fake.user("odd")
        fake.users[odd]["public_metrics"] = {"followers_count": "12k"}
        huge = fake.user("huge")
        fake.users[huge]["public_metrics"]["followers_count"] = 1e20
        numeric = fake.user("numeric")
        fake.users[numeric]["username"] = 4242
        first = fake.tweet("acme bank one", author=odd, created=CREATED)
        second = fake.tweet("acme bank two", author=huge, created=CREATED)
        fake.tweets[-1].update(public_metrics=None, note_tweet="not an object")
        third = fake.tweet("acme bank three", author=numeric, created=CREATED)
        last = fake.tweet("acme bank four", author=odd, created=CREATED)
        broken = fake.tweet("acme bank broken", author=odd, created="2300-01-01T00:00:00.000Z")
        with capture_logs() as logs:
            got = await take(source(fake, None, Clock()), 4)
        assert [m.id for m in got] == [first, second, third, last]
        assert [m.author_followers for m in got] == [0, 0, 10, 0]
        assert got[1].text == "acme bank two" and got[1].engagement == 0
        assert got[2].author is None and got[2].url is not None
        skipped = [e for e in logs if e["event"] == "x.tweet_unreadable"]
        assert [e["tweet"] for e in skipped] == [broken.removeprefix("x:")]

    async def test_a_rate_limit_reset_already_past_backs_off(self, fake: FakeX) -> None:
        """429s whose reset time is already past by our clock (clock skew) wait the back-off,
        longer at every refusal in a row, instead of asking X again at once."""
        alice = fake.user("alice")
        expected = fake.tweet("acme bank", author=alice, created=CREATED)
        past = {"x-rate-limit-reset": str(int(NOW) - 3)}
        fake.fail("/2/tweets/search/recent", status=429, headers=past, times=4)
        clock = Clock()
        got = await take(source(fake, None, clock), 1)
        assert [m.id for m in got] == [expected] and fake.faults[0].times == 0
        assert clock.sleeps[:4] == [1.0, 2.0, 4.0, 8.0]

    async def test_backfill_and_catch_up_come_oldest_first_across_brands(
        self, fake: FakeX, tmp_path: Path
    ) -> None:
        """X answers newest first, and the pipeline's watermark follows the newest mention: the
        first start's backfill and a restart's catch-up come oldest first (all pages of every
        brand gathered first), so none is late, even when a quieter brand's newest tweet is
        found beside a busy brand's older ones."""
        other = Brand(id="other", keywords=["other bank"])
        alice = fake.user("alice")
        for k in range(10):  # a tweet a minute over the 10 minutes of the first start's backfill
            fake.tweet(f"acme bank {k}", author=alice, created=iso(NOW - 590 + 60 * k))
        fake.tweet("other bank news", author=alice, created=iso(NOW - 5))
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()
        try:
            first = await take(source(fake, store, clock, brands=[BRAND, other]), 11)
            for k in range(30):  # down for 15 minutes, a tweet every 30 s meanwhile
                fake.tweet(f"acme bank {k}", author=alice, created=iso(clock.now + 30 * k))
            fake.tweet("other bank again", author=alice, created=iso(clock.now + 890))
            clock.now += 900
            second = await take(source(fake, store, clock, brands=[BRAND, other]), 31)
        finally:
            await store.close()
        got = first + second
        assert len(got) == 42 and len({m.id for m in got}) == 42
        assert [m.created_at for m in got] == sorted(m.created_at for m in got)
        stats = counted(got, [BRAND, other])
        assert (stats.mentions, stats.late) == (42, 0)

    async def test_a_brand_whose_search_x_refuses_is_reported_while_the_others_flow(
        self, fake: FakeX
    ) -> None:
        """All brands are searched in one poll, yet a query X refuses (400) stops only its own
        brand: the others' tweets flow, and the refusal keeps the source failing (so it shows
        stalled and ops are told) with X's reason."""
        other = Brand(id="other", keywords=["other bank"])
        alice = fake.user("alice")
        expected = [fake.tweet(f"acme bank {n}", author=alice, created=CREATED) for n in range(3)]
        fake.fail("/2/tweets/search/recent", status=400, query="other bank", times=1_000)
        clock = Clock()
        src = source(fake, None, clock, brands=[BRAND, other])
        got = await take(src, 3)
        assert sorted(m.id for m in got) == sorted(expected)
        health = src.health()
        assert health.last_success is None and health.consecutive_failures >= 1
        assert health.last_error is not None and "search:other" in health.last_error
        assert "injected" in health.last_error

    async def test_a_cursor_older_than_x_s_week_searches_from_a_time(
        self, fake: FakeX, tmp_path: Path
    ) -> None:
        """X refuses a `since_id` older than 7 days. After a quiet week (or a week stopped) the
        cursor's tweet is that old (its id says when it was posted), so the search asks from a
        time instead, 6.5 days back, and the new tweets arrive; a backfill set longer than X
        reaches is held to the same 6.5 days."""
        alice = fake.user("alice")
        first_tweet = fake.tweet("acme bank hello", author=alice, created=iso(NOW - 30))
        store = await Store.open(tmp_path / "s.db")
        clock = Clock()
        fake.clock = clock
        try:
            first = await take(source(fake, store, clock, backfill="10d"), 1)
            clock.now += 8 * 86_400
            asked_before = len(fake.searches)
            crisis = [fake.tweet(f"acme bank stole {n}", author=alice, created=iso(clock.now - 5))
                      for n in range(3)]  # fmt: skip
            second = await take(source(fake, store, clock), 3)
        finally:
            await store.close()
        assert [m.id for m in first] == [first_tweet]
        assert sorted(m.id for m in second) == sorted(crisis)
        assert fake.refused == []
        assert fake.searches[0]["start_time"] == iso(NOW - 6.5 * 86_400).replace(".000", "")
        after_the_week = fake.searches[asked_before]
        assert "since_id" not in after_the_week and "start_time" in after_the_week

    async def test_long_posts_whole_and_quotes_of_the_brand_answer_it(self, fake: FakeX) -> None:
        """A long post comes whole (X's `text` stops at 280 characters, `note_tweet` has the
        rest), so a brand named late in it is attributed; a quote of the brand's own post is
        recognised as answering the brand (the quoted tweet comes in includes.tweets)."""
        alice, brand_account = fake.user("alice"), fake.user("AcmeBank", 90_000)
        long_text = "I have been a customer for twenty years and this week was a nightmare. " * 5
        long_text += "Acme Bank froze my account and nobody answers."
        long_post = fake.tweet(long_text, author=alice, created=CREATED)
        brand_post = fake.tweet("We love our customers!", author=brand_account, created=CREATED)
        quote = fake.tweet("this is how they treat us", author=alice, created=CREATED,
                           quoting=brand_post)  # fmt: skip
        got = {m.id: m for m in await take(source(fake, None, Clock()), 3)}
        assert got[long_post].text == long_text
        assert counted([got[long_post]], [BRAND]).mentions == 1
        assert got[quote].in_reply_to_author == "AcmeBank"

    async def test_a_slow_search_times_out_and_is_asked_again(self, fake: FakeX) -> None:
        """A search answered after the timeout is an error like any other: it backs off and asks
        again from its cursor; every tweet arrives once; health shows the failure, then not."""
        alice = fake.user("alice")
        expected = [fake.tweet(f"acme bank {n}", author=alice, created=CREATED) for n in range(2)]
        fake.fail("/2/tweets/search/recent", delay=0.5)
        clock = Clock()
        src = source(fake, None, clock, request_timeout=0.2)
        got = await take(src, 2)
        ids = [m.id for m in got]
        assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
        assert fake.faults[0].times == 0
        assert Backoff(rand=lambda: 0.5).next() in clock.sleeps
        health = src.health()
        assert health.last_error is not None and "did not answer within 0.2s" in health.last_error
        assert health.consecutive_failures == 0
        assert health.last_success and health.last_error_at
        assert health.last_success > health.last_error_at

    async def test_a_rejected_token_backs_off_and_says_so(self, fake: FakeX) -> None:
        """401s (a revoked or rotated bearer token) are reported in health as unauthorised and
        retried with back-off, never ending the source; once accepted, tweets flow again."""
        alice = fake.user("alice")
        expected = fake.tweet("acme bank after the fix", author=alice, created=CREATED)
        fake.fail("/2/tweets/search/recent", status=401, times=3)
        clock = Clock()
        src = source(fake, None, clock)
        got = await take(src, 1)
        assert [m.id for m in got] == [expected] and fake.faults[0].times == 0
        health = src.health()
        assert health.last_error is not None and "401" in health.last_error
        assert health.consecutive_failures == 0
        backoffs = [s for s in clock.sleeps if s > 0]
        assert len(backoffs) >= 3 and backoffs[1] > backoffs[0]  # exponential, not a hot loop


class TestFilteredStream:
    async def test_stream_reconnects_and_search_fills_the_gap(self, fake: FakeX) -> None:
        """Rules are set from the brands; a dropped stream reconnects, and what was posted while
        it was down comes from search, each tweet once."""
        alice = fake.user("alice")
        clock = Clock()
        src = source(fake, None, clock, mode="stream")
        expected: list[str] = []

        async def traffic() -> None:
            await fake.listening()
            expected.append(fake.tweet("acme bank live", author=alice, created=CREATED))
            await asyncio.sleep(0.05)
            fake.drop_streams()
            expected.append(fake.tweet("acme bank while down", author=alice, created=CREATED))
            await fake.listening()
            expected.append(fake.tweet("acme bank live again", author=alice, created=CREATED))

        got = await take(src, 3, traffic)
        assert sorted(m.id for m in got) == sorted(expected)
        assert [r["tag"] for r in fake.rules] == [f"{RULE_TAG}acme"]
        last_error = src.health().last_error
        assert last_error is not None and "stream" in last_error  # the drop was seen

    async def test_many_brands_catch_up_brand_by_brand(self, fake: FakeX) -> None:
        """Brands whose queries joined pass X's 512 characters (4 of these) are caught up one
        query each after a connect: X never refuses the catch-up, and the stream's tweets and
        the missed ones all arrive."""
        brands = [wordy_brand(n) for n in range(4)]
        alice = fake.user("alice")
        missed = fake.tweet("brand1 bank before the connect", author=alice, created=CREATED)
        clock = Clock()
        src = source(fake, None, clock, mode="stream", brands=brands)
        expected = [missed]

        async def traffic() -> None:
            await fake.listening()
            for n in range(3):
                expected.append(fake.tweet(f"brand2 app {n}", author=alice, created=CREATED))

        got = await take(src, 4, traffic)
        assert sorted(m.id for m in got) == sorted(expected)
        assert fake.searches and all(len(q["query"]) <= 512 for q in fake.searches)
        assert src.health().consecutive_failures == 0

    async def test_a_failing_catch_up_backs_off_and_is_no_success(self, fake: FakeX) -> None:
        """A connect is no success until its catch-up search has worked: while it fails the
        source is failing and the waits between reconnects grow, rather than a storm of
        reconnects each resetting the back-off."""
        alice = fake.user("alice")
        expected = fake.tweet("acme bank", author=alice, created=CREATED)
        fake.fail("/2/tweets/search/recent", status=503, times=4)
        clock = Clock()
        src = source(fake, None, clock, mode="stream")
        got = await take(src, 1)
        assert [m.id for m in got] == [expected]
        backoffs = [s for s in clock.sleeps if s > 0]
        assert len(backoffs) == 4 and backoffs == sorted(backoffs) and backoffs[0] < backoffs[-1]

    async def test_a_refused_connect_fails_and_backs_off_rather_than_waiting(
        self, fake: FakeX
    ) -> None:
        """X refusing the stream's connect (a 503, or too many connections) ends tweepy's
        stream before it connects: that is a failure (backed off, shown in health), not a wait
        for a connect that never comes; the next connect catches up."""
        alice = fake.user("alice")
        expected = fake.tweet("acme bank", author=alice, created=CREATED)
        fake.fail("/2/tweets/search/stream", status=503, times=1)
        clock = Clock()
        src = source(fake, None, clock, mode="stream")
        got = await take(src, 1)
        assert [m.id for m in got] == [expected] and fake.faults[0].times == 0
        health = src.health()
        assert health.last_error is not None and "503" in health.last_error
        assert Backoff(rand=lambda: 0.5).wait(1) in clock.sleeps


USER_7 = {"id": "7", "username": "a"}


@pytest.mark.parametrize(
    ("tweet", "includes", "author"),
    [
        ({"author_id": "7"}, {"users": [{"id": ["7"], "username": "a"}, {"id": "8"}]}, None),
        ({"author_id": ["7"]}, {"users": [USER_7]}, None),
        ({"author_id": "7", "in_reply_to_user_id": {"a": 1}}, {"users": [USER_7]}, "a"),
        ({"author_id": "7"}, {"users": "none"}, None),
        ({"author_id": 7}, {"users": [{"id": 7, "username": "a"}]}, "a"),  # numbers as ids
    ],
)  # fmt: skip
def test_ids_of_the_wrong_shape_read_as_unknown(
    tweet: dict[str, Any], includes: dict[str, Any], author: str | None
) -> None:
    """A list or an object where an id goes names no one; it does not fail the tweet (nor, in
    `includes`, every tweet of the page)."""
    mention = to_mention({"id": "1", "created_at": CREATED, "text": "acme bank", **tweet}, includes)
    assert mention.author == author and mention.in_reply_to_author is None


@pytest.mark.parametrize("tweet_id", ["²", "12a", "", "1" * 30, None, 1.5])
def test_a_tweet_id_that_is_no_number_is_refused(tweet_id: object) -> None:
    """A tweet's id must be ASCII digits ("²" passes `str.isdigit` and then fails `int`)."""
    with pytest.raises(ValueError, match="numeric id"):
        to_mention({"id": tweet_id, "created_at": CREATED, "text": "acme bank"}, {})


def wordy_brand(n: int) -> Brand:
    """A brand with a realistic number of terms: its X query is about 160 characters."""
    return Brand(
        id=f"b{n}",
        keywords=[f"brand{n} bank", f"brand{n}bank", f"brand{n} app", f"brand{n} card"],
        hashtags=[f"#Brand{n}Bank"],
        handles=[f"@Brand{n}Bank", f"@Brand{n}Help"],
        exclusions=["#birding", f"brand{n} falcon", f"brand{n} bird"],
    )


def test_a_brand_query_over_x_s_limit_cannot_start() -> None:
    """A brand whose own query is over X's 512 characters is a configuration error at start,
    naming the brand, rather than a search X refuses on every poll."""
    huge = Brand(id="huge", keywords=[f"keyword number {n}" for n in range(40)])
    settings = XSettings(api_url="http://127.0.0.1:9")
    with pytest.raises(SourceSetupError, match=r"brand 'huge'.*512"):
        XSource(settings, [BRAND, huge], None, bearer_token=TOKEN)
