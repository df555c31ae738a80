"""The SQLite state store: seen ids, incidents, the notification log, and opening failures."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from conftest import mark_sent

from crisiswatch import store as store_module
from crisiswatch.domain import (
    Incident,
    IncidentStatus,
    Page,
    PageKind,
    Ranked,
    Severity,
    Silence,
    Stage,
    Totals,
)
from crisiswatch.notify.codec import dump_page, load_page
from crisiswatch.store import CLICK_KEYS_KEPT, SCHEMA_VERSION, Store, StoreError

IncidentFactory = Callable[..., Incident]
PageFactory = Callable[..., Page]

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "crisiswatch.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


def wal_size(db_path: Path) -> int:
    return Path(f"{db_path}-wal").stat().st_size


class TestConnection:
    async def test_a_cancelled_call_keeps_the_connection_until_its_thread_is_done(
        self, store: Store
    ) -> None:
        """A caller cancelled while its transaction runs in a thread (a source stopped at the
        end of a test, a daemon shutting down) holds the store until that thread is done: the
        next call had started a second thread on the same connection at once, which SQLite
        refuses as 'bad parameter or other API misuse' (a test failed so now and then)."""
        order: list[str] = []

        def slow(db: sqlite3.Connection) -> None:
            time.sleep(0.3)
            order.append("slow done")

        def fast(db: sqlite3.Connection) -> None:
            order.append("fast")

        first = asyncio.create_task(store._run(slow))
        await asyncio.sleep(0.05)  # its thread has begun
        first.cancel()
        await store._run(fast)
        assert order == ["slow done", "fast"]
        with pytest.raises(asyncio.CancelledError):
            await first

    async def test_no_open_cursor_leaves_the_store(self, store: Store) -> None:
        """A cursor a call hands back is closed in its thread, under the lock: finalized later
        on the event loop's thread, while another thread used the connection, it corrupted the
        statement cache (a source test failed now and then with 'bad parameter or other API
        misuse')."""
        cursor = await store._run(lambda db: db.execute("SELECT 1 UNION SELECT 2"))
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            cursor.fetchone()


class TestSeen:
    async def test_round_trip(self, store: Store) -> None:
        """Seen ids come back oldest first."""
        await store.mark_seen(["a", "b"], T0)
        await store.mark_seen(["c"], T0 + timedelta(seconds=1))
        assert await store.recent_seen(10) == ["a", "b", "c"]

    async def test_limit_keeps_the_most_recent(self, store: Store) -> None:
        """recent_seen(n) returns the n ids seen last, still oldest first."""
        await store.mark_seen([f"id{n}" for n in range(10)], T0)
        assert await store.recent_seen(3) == ["id7", "id8", "id9"]

    async def test_the_newest_come_a_chunk_at_a_time(self, store: Store) -> None:
        """The dedupe window is read in chunks of the newest ids, oldest first."""
        await store.mark_seen([f"id{n}" for n in range(10)], T0)
        chunks = [chunk async for chunk in store.recent_seen_chunks(7, size=3)]
        assert chunks == [["id3", "id4", "id5"], ["id6", "id7", "id8"], ["id9"]]
        assert [c async for c in store.recent_seen_chunks(20, size=6)] == [
            [f"id{n}" for n in range(6)],
            [f"id{n}" for n in range(6, 10)],
        ]
        assert [c async for c in store.recent_seen_chunks(0)] == []

    async def test_seeing_again_is_ignored(self, store: Store) -> None:
        """Marking an id seen twice keeps one row, at its first place."""
        await store.mark_seen(["a", "b"], T0)
        await store.mark_seen(["a", "c"], T0)
        assert await store.recent_seen(10) == ["a", "b", "c"]

    async def test_the_write_ahead_log_shrinks_back_after_a_big_flush(
        self, db_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A checkpoint's flush of the ids waiting for it (up to a million, 200 MB of WAL) no
        longer leaves the WAL that big for good: once checkpointed, the next write cuts it back
        to `WAL_KEPT` (a quarter MB here)."""
        monkeypatch.setattr(store_module, "WAL_KEPT", 256 * 1024)
        store = await Store.open(db_path)
        try:
            await store.mark_seen([f"x:{n:019d}" for n in range(100_000)], T0)
            grown = wal_size(db_path)
            await store.mark_seen(["x:next"], T0)
            assert grown > 4 * 1024 * 1024 and wal_size(db_path) <= 256 * 1024
        finally:
            await store.close()

    async def test_nothing_to_mark(self, store: Store) -> None:
        """An empty batch is fine and adds nothing."""
        await store.mark_seen([], T0)
        assert await store.recent_seen(10) == []

    async def test_old_ids_are_forgotten_beyond_what_is_kept(self, store: Store) -> None:
        """With `keep`, the table stays near `keep` ids however many are marked, and the newest
        `keep` are always there to restore the dedupe window."""
        for batch in range(50):
            await store.mark_seen([f"id{batch}-{n}" for n in range(40)], T0, keep=100)
            newest = await store.recent_seen(100)
            assert newest[-1] == f"id{batch}-39" and len(newest) == min(100, 40 * (batch + 1))
        assert len(await store.recent_seen(10_000)) <= 100 + 10 + 40


class TestIncidents:
    async def test_saved(self, store: Store, make_incident: IncidentFactory) -> None:
        """A saved incident reads back with its fields."""
        incident = make_incident()
        await store.save_incident(incident)
        (row,) = await store.incidents()
        assert row["id"] == incident.id
        assert row["key"] == "kestrel"
        assert row["status"] == "firing"
        assert row["severity"] == "critical"
        assert row["stage"] == "flame"
        assert row["started_at"] == incident.started_at.isoformat()
        assert row["resolved_at"] is None
        assert row["summary"] == incident.summary
        assert '"angry-surge"' in (row["detail"] or "")

    async def test_updated_in_place(self, store: Store, make_incident: IncidentFactory) -> None:
        """Saving an incident again replaces its row instead of adding one."""
        incident = make_incident()
        await store.save_incident(incident)
        resolved = replace(
            incident,
            status=IncidentStatus.RESOLVED,
            severity=Severity.WARNING,
            stage=Stage.FIRE,
            resolved_at=T0 + timedelta(hours=1),
        )
        await store.save_incident(resolved)
        (row,) = await store.incidents()
        assert (row["status"], row["severity"], row["stage"]) == ("resolved", "warning", "fire")
        assert row["resolved_at"] == (T0 + timedelta(hours=1)).isoformat()

    async def test_oldest_first(self, store: Store, make_incident: IncidentFactory) -> None:
        """Incidents are listed by start time."""
        late = make_incident(id="b@late", started_at=T0 + timedelta(hours=2))
        early = make_incident(id="a@early", started_at=T0 - timedelta(hours=2))
        await store.save_incident(late)
        await store.save_incident(early)
        assert [row["id"] for row in await store.incidents()] == ["a@early", "b@late"]


class TestNotificationLog:
    async def queued(self, store: Store, page: Page, notifier: str) -> bool:
        """Whether the outbox takes `page` for `notifier` (not if that notifier sent it)."""
        return await store.enqueue(page, dump_page(page), [notifier]) == 1

    async def test_a_sent_page_is_never_queued_again_for_that_notifier(
        self, store: Store, make_page: PageFactory
    ) -> None:
        """A page sent by a notifier is logged as sent by that notifier only: queued again
        (a replay, a restart) it goes to no notifier that sent it."""
        page = make_page()
        await mark_sent(store, page, "console")
        assert not await self.queued(store, page, "console")
        assert await self.queued(store, page, "slack")
        await mark_sent(store, page, "slack")  # a second notifier's log keeps the first's
        assert not await self.queued(store, page, "console")

    async def test_pages_are_told_apart(self, store: Store, make_page: PageFactory) -> None:
        """Another kind or time of page for the same incident is a different page."""
        await mark_sent(store, make_page(), "console")
        for other in (
            make_page(kind=PageKind.ESCALATED),
            make_page(at=T0 + timedelta(minutes=5)),
            make_page(id="acme@20240301T1155Z"),
        ):
            assert await self.queued(store, other, "console")


class TestClicks:
    async def test_a_press_is_recorded_once_and_its_key_kept_a_day(self, store: Store) -> None:
        """A press seen again is not recorded; each record says how many came before; keys
        older than a day are forgotten, so the table stays small."""
        at = datetime(2024, 3, 1, tzinfo=UTC)
        assert await store.record_click("i@1", "not_negative", "U1", at, "x:1", "k") == 0
        assert await store.record_click("i@1", "not_negative", "U1", at, "x:1", "k") is None
        assert await store.record_click("i@1", "not_negative", "U2", at, "x:2", "k2") == 0
        assert await store.record_click("i@1", "not_negative", "U2", at, "x:1", "k3") == 1
        later = at + CLICK_KEYS_KEPT + timedelta(seconds=1)
        assert await store.record_click("i@1", "not_negative", "U1", later, "x:1", "k") == 2
        assert len(await store.clicks("i@1")) == 4


def rows(path: Path, table: str) -> list[str]:
    """The incident ids a table's rows are about (each row once)."""
    column = "id" if table == "incidents" else "incident_id"
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute(f"SELECT {column} FROM {table}"))


class TestCodec:
    def test_a_page_with_totals_round_trips_and_an_older_row_has_none(
        self, make_page: PageFactory
    ) -> None:
        """The outbox keeps a page's incident totals; a page queued by the previous release
        (no totals) reads back with none."""
        page = make_page(totals=Totals(T0, 1240, 756))
        assert load_page(dump_page(page)) == page
        older = orjson.loads(dump_page(page))
        del older["incident"]["totals"]
        assert load_page(orjson.dumps(older)).incident.totals is None

    def test_a_bucket_s_ranked_counts_are_written_as_the_lists_they_hold(
        self, make_page: PageFactory
    ) -> None:
        """A closed bucket's terms and sources are `Ranked` (sorted when first read): queued
        unread, they are written sorted, and read back as the tuples they stand for."""
        page = make_page()
        bucket = page.incident.latest.bucket
        ranked = replace(
            bucket,
            sources=Ranked({"reddit": 10, "x": 30}),
            top_terms=Ranked({"swallowed": 9, "atm": 12, "card": 2}, 2),
        )
        incident = replace(page.incident, latest=replace(page.incident.latest, bucket=ranked))
        back = load_page(dump_page(replace(page, incident=incident)))
        assert back == page
        assert type(back.incident.latest.bucket.top_terms) is tuple


class TestPrune:
    async def record(self, store: Store, page: Page, *, sent: bool = True) -> None:
        """An incident with its page queued (and sent), sample post, message and a click."""
        incident = page.incident
        await store.save_incident(incident)
        await store.enqueue(page, dump_page(page), ["slack"])
        if sent:
            [row] = [r for r in await store.outbox() if r["incident_id"] == incident.id]
            assert isinstance(row["seq"], int)
            await store.outbox_sent(row["seq"], page, "slack")
        await store.save_samples(incident.id, [("x:1", "a post")])
        await store.save_message(incident.id, "slack", "C1", incident.id, "default")
        await store.record_click(incident.id, "snooze_1h", "U1", T0, None)

    async def test_old_state_goes_and_what_is_needed_stays(
        self, store: Store, db_path: Path, make_page: PageFactory
    ) -> None:
        """Past the cutoff, a resolved incident and everything about it goes; an incident still
        firing (escalation needs it), one with a page still to send, and one paged after the
        cutoff stay whole; learned feedback goes, feedback still to learn stays."""

        def page(incident_id: str, resolved: bool) -> Page:
            status = IncidentStatus.RESOLVED if resolved else IncidentStatus.FIRING
            return make_page(id=incident_id, status=status, resolved_at=T0 if resolved else None)

        await self.record(store, page("done", resolved=True))
        await store.mark_posting("done|updated|x", "slack")  # a reply's mark left by a crash
        await self.record(store, page("firing", resolved=False))
        await self.record(store, page("queued", resolved=True), sent=False)
        await store.record_click("unrecorded", "acknowledge", "U1", T0, None)
        await store.add_feedback([("learned", "negative"), ("to learn", "negative")], "ops")
        await store.feedback_applied([1])
        cutoff = datetime.now(UTC)
        await self.record(store, page("recent", resolved=True))  # paged after the cutoff

        deleted = await store.prune(cutoff)

        needed = ["firing", "queued", "recent"]
        for table in ("incidents", "outbox", "samples", "messages", "clicks"):
            assert rows(db_path, table) == needed, table
        assert rows(db_path, "notifications") == ["firing", "recent"]
        assert rows(db_path, "posting") == []
        assert [text for _, text, _ in await store.pending_feedback()] == ["to learn"]
        with sqlite3.connect(db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1
        assert [row[0] for row in await store.unacknowledged("slack")] == ["firing"]
        assert deleted["incidents"] == 1 and deleted["clicks"] == 2 and deleted["feedback"] == 1
        assert await store.prune(cutoff) == dict.fromkeys(deleted, 0)  # nothing more to do

    async def test_silences_that_ended_before_the_cutoff_go(self, store: Store) -> None:
        """Every page reads every silence: one that ended before the cutoff is deleted, one
        still in force or ended since stays."""
        hour = timedelta(hours=1)
        for name, ends_at in (
            ("ended", T0 + hour),
            ("since", T0 + 3 * hour),
            ("on", T0 + 30 * hour),
        ):
            await store.add_silence(Silence(name, T0, ends_at, "ops", "maintenance"))
        deleted = await store.prune(T0 + 2 * hour)
        assert [s.id for s in await store.silences()] == ["on", "since"]
        assert deleted["silences"] == 1


class TestPersistence:
    async def test_reopen_keeps_state(
        self, db_path: Path, make_incident: IncidentFactory, make_page: PageFactory
    ) -> None:
        """Closing and reopening the same file keeps seen ids, incidents and the log."""
        first = await Store.open(db_path)
        await first.mark_seen(["a", "b"], T0)
        await first.save_incident(make_incident())
        await mark_sent(first, make_page(), "slack")
        await first.close()

        second = await Store.open(db_path)
        try:
            assert await second.recent_seen(10) == ["a", "b"]
            assert [row["id"] for row in await second.incidents()] == [make_incident().id]
            page = make_page()
            assert await second.enqueue(page, dump_page(page), ["slack"]) == 0  # sent: logged
        finally:
            await second.close()

    async def test_creates_missing_folders(self, tmp_path: Path) -> None:
        """The state folder is created when it does not exist."""
        path = tmp_path / "a" / "b" / "state.db"
        store = await Store.open(path)
        await store.close()
        assert path.is_file()

    async def test_path_under_a_regular_file(self, tmp_path: Path) -> None:
        """A path that cannot exist raises StoreError naming it."""
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        path = blocker / "state.db"
        with pytest.raises(StoreError) as caught:
            await Store.open(path)
        assert str(path) in str(caught.value)

    async def test_path_is_a_folder(self, tmp_path: Path) -> None:
        """A folder where the database file should be raises StoreError naming it."""
        path = tmp_path / "state.db"
        path.mkdir()
        with pytest.raises(StoreError) as caught:
            await Store.open(path)
        assert str(path) in str(caught.value)

    async def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite raises StoreError naming it."""
        path = tmp_path / "state.db"
        path.write_bytes(b"this is not a database, just some text " * 100)
        with pytest.raises(StoreError) as caught:
            await Store.open(path)
        assert str(path) in str(caught.value)

    async def test_schema_version_mismatch(self, db_path: Path) -> None:
        """A store written by another schema version is refused with both versions named."""
        store = await Store.open(db_path)
        await store.close()
        with sqlite3.connect(db_path) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION + 1,))
        db.close()
        with pytest.raises(StoreError) as caught:
            await Store.open(db_path)
        message = str(caught.value)
        assert str(db_path) in message
        assert f"schema {SCHEMA_VERSION + 1}" in message
        assert str(SCHEMA_VERSION) in message


async def test_a_store_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    """A version 1 store (its messages without a route) opens: the column is added, unknown
    for the messages already there, and the store says schema 2 from then on."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema', '1');"
            "CREATE TABLE messages (incident_id TEXT NOT NULL, notifier TEXT NOT NULL,"
            " channel TEXT NOT NULL, ts TEXT NOT NULL, posted_at TEXT NOT NULL,"
            " PRIMARY KEY (incident_id, notifier));"
            "INSERT INTO messages VALUES ('a@1', 'slack', 'C1', '1.1', '2026-03-02');"
        )
    store = await Store.open(path)
    assert await store.posted_for("a@1", "slack") == ("C1", None)
    await store.save_message("b@1", "slack", "C2", "2.2", "exec")
    assert await store.posted_for("b@1", "slack") == ("C2", "exec")
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
