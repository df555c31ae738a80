"""State in one SQLite file (WAL): seen ids, incidents and the notification log.

The interface is narrow and async so that a shared store (PostgreSQL) can replace it later. Each
call runs in a worker thread, one at a time; a write is one transaction, so a crash leaves
either the whole change or none of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import orjson

from crisiswatch.domain import Incident, Page

SCHEMA_VERSION = 1
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, status TEXT NOT NULL, brand TEXT NOT NULL,
    severity TEXT NOT NULL, stage TEXT NOT NULL, started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, resolved_at TEXT, summary TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    page_key TEXT NOT NULL, incident_id TEXT NOT NULL, kind TEXT NOT NULL,
    at TEXT NOT NULL, sent_at TEXT NOT NULL, notifier TEXT NOT NULL,
    PRIMARY KEY (page_key, notifier)
);
"""


class StoreError(RuntimeError):
    """The state store cannot be opened or written; the message says what to fix."""


def page_key(page: Page) -> str:
    """The identity of a page: sending it twice is a duplicate."""
    return f"{page.incident.id}|{page.kind.value}|{page.at.isoformat()}"


class Store:
    """The daemon's state; open with `await Store.open(path)`, close with `await close()`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        return cls(await asyncio.to_thread(_connect, path))

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(_transaction, self._db, work)

    async def mark_seen(self, ids: Iterable[str], at: datetime) -> None:
        rows = [(mention_id, at.isoformat()) for mention_id in ids]
        if rows:
            await self._run(
                lambda db: db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", rows)
            )

    async def recent_seen(self, limit: int) -> list[str]:
        """The most recently seen ids, oldest first, to restore the dedupe window."""
        query = (
            "SELECT id FROM (SELECT id, rowid FROM seen ORDER BY rowid DESC LIMIT ?) ORDER BY rowid"
        )
        rows = await self._run(lambda db: db.execute(query, (limit,)).fetchall())
        return [row[0] for row in rows]

    async def save_incident(self, incident: Incident) -> None:
        detail = orjson.dumps(
            {
                "rules": incident.rules,
                "topics": incident.topics,
                "sources": incident.sources,
                "reasons": incident.reasons,
                "peak_count": incident.peak_count,
                "route": incident.route,
            }
        ).decode()
        row = (
            incident.id,
            incident.key,
            incident.status.value,
            incident.brand,
            incident.severity.label,
            incident.stage.label,
            incident.started_at.isoformat(),
            incident.updated_at.isoformat(),
            incident.resolved_at.isoformat() if incident.resolved_at else None,
            incident.summary,
            detail,
        )
        sql = "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        await self._run(lambda db: db.execute(sql, row))

    async def incidents(self) -> list[dict[str, str | None]]:
        """Every incident recorded, oldest first, as plain rows (for reports and tests)."""

        def read(db: sqlite3.Connection) -> list[dict[str, str | None]]:
            cursor = db.execute("SELECT * FROM incidents ORDER BY started_at, id")
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await self._run(read)

    async def was_sent(self, key: str, notifier: str) -> bool:
        sql = "SELECT 1 FROM notifications WHERE page_key = ? AND notifier = ?"
        return await self._run(lambda db: db.execute(sql, (key, notifier)).fetchone() is not None)

    async def record_sent(self, page: Page, notifier: str) -> None:
        """Log a page as sent: only after the notifier succeeded (a crash repeats, never loses)."""
        row = (
            page_key(page),
            page.incident.id,
            page.kind.value,
            page.at.isoformat(),
            datetime.now(UTC).isoformat(),
            notifier,
        )
        sql = "INSERT OR REPLACE INTO notifications VALUES (?, ?, ?, ?, ?, ?)"
        await self._run(lambda db: db.execute(sql, row))


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the state store {path}: {exc}") from exc
    try:
        _prepare(db, path)
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreError(f"cannot open the state store {path}: {exc}") from exc
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if found is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(found[0]) != SCHEMA_VERSION:
        raise StoreError(f"{path} has state schema {found[0]}, this version reads {SCHEMA_VERSION}")


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:  # a full disk, a locked or corrupt file
        raise StoreError(f"state store write failed: {exc}") from exc
    return result
