"""Mention JSON lines: the interchange format of replay, backtest, HTTP ingest and tests.

One object per line; only `id`, `created_at` and `text` are required:
`{"id": "x:1", "source": "x", "created_at": "2015-02-24T19:35:52Z", "text": "...",
"author": "...", "author_followers": 120, "url": "...", "lang": "en", "brand": "acme",
"in_reply_to_author": "AcmeBank", "engagement": 42}`
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson

from crisiswatch.domain import Mention

MAX_TEXT = 10_000  # characters kept of a post; the rest is cut, never the daemon
MAX_FIELD = 512  # characters of an id, author, url, lang, source or brand
MAX_COUNT = 10_000_000_000  # followers or engagement of one post at most (more than people exist)
EARLIEST, LATEST = 2000, 2200  # years a post's time may have: beyond, event time would break


class MentionError(ValueError):
    """A line that is not a valid mention; the message says why."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was skipped, with its number (1-based) and the reason."""

    line_number: int
    reason: str


@dataclass(frozen=True, slots=True)
class CutShort(BadLine):
    """The stream cannot be read from this line on (a gzip file cut short, or not gzip): the
    lines before it were read; none after it can be."""


def parse_mention(line: str | bytes, *, default_source: str = "unknown") -> Mention:
    """Parse one JSON line into a `Mention`; raise `MentionError` saying what is wrong."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MentionError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise MentionError("expected a JSON object")
    return mention_from_dict(obj, default_source=default_source)


def mention_from_dict(obj: dict[str, Any], *, default_source: str = "unknown") -> Mention:
    mention_id = _required_str(obj, "id")
    if not mention_id:
        raise MentionError("'id' is empty")
    text = obj.get("text")
    if not isinstance(text, str):
        raise MentionError("'text' is missing or not a string")
    return Mention(
        id=mention_id,
        source=_optional_str(obj, "source") or default_source,
        created_at=parse_time(_required_str(obj, "created_at")),
        text=text[:MAX_TEXT],
        brand=_optional_str(obj, "brand"),
        author=_optional_str(obj, "author"),
        author_followers=_count(obj, "author_followers"),
        url=_optional_str(obj, "url"),
        lang=_language(obj),
        in_reply_to_author=_optional_str(obj, "in_reply_to_author"),
        engagement=_count(obj, "engagement"),
    )


def parse_time(value: str) -> datetime:
    """ISO-8601 in any offset (a `Z` suffix included) to aware UTC; naive means UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MentionError(f"'created_at' is not an ISO-8601 time: {value[:40]!r}") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:30-01:00 is past the year 9999 in UTC
        raise MentionError(f"'created_at' is out of range in UTC: {value[:40]!r}") from None
    if not EARLIEST <= moment.year <= LATEST:
        raise MentionError(f"'created_at' is not a plausible time of a post: {value[:40]!r}")
    return moment


def _language(obj: dict[str, Any]) -> str | None:
    """A language code as rules write it: lowercase (`pt-BR` is `pt-br`)."""
    lang = _optional_str(obj, "lang")
    return None if lang is None else lang.lower()


def _required_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MentionError(f"{key!r} is missing or not a string")
    return value[:MAX_FIELD]


def _count(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise MentionError(f"{key!r} must be a whole number from 0 to {MAX_COUNT:,}")
    return value


def plausible_count(value: object) -> int:
    """A count from an API's payload, read leniently: a number from 0 to `MAX_COUNT` (a float
    cut to a whole one), else 0. A follower count that is missing, null, "12k" or 1e20 says
    nothing usable; it must not cost the post, nor overflow a bucket's sums."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if 0 <= value <= MAX_COUNT else 0


def text_or_none(value: object, limit: int = MAX_FIELD) -> str | None:
    """A string field from an API's payload: cut to `limit`, or None when it is not a string
    (a numeric username, a null)."""
    return value[:limit] or None if isinstance(value, str) else None


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MentionError(f"{key!r} must be a string")
    return value[:MAX_FIELD] or None


def mention_to_dict(mention: Mention) -> dict[str, Any]:
    """The JSON-lines object of a mention (the inverse of `mention_from_dict`)."""
    obj: dict[str, Any] = {
        "id": mention.id,
        "source": mention.source,
        "created_at": mention.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "text": mention.text,
    }
    for key in ("brand", "author", "url", "lang", "in_reply_to_author"):
        value = getattr(mention, key)
        if value is not None:
            obj[key] = value
    for key in ("author_followers", "engagement"):
        if count := getattr(mention, key):
            obj[key] = count
    return obj


GZIP_MAGIC = b"\x1f\x8b"


def open_lines(path: Path) -> IO[bytes]:
    """Open a JSON-lines file for reading bytes, gunzipping when it is gzipped."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    return cast(IO[bytes], gzip.open(path, "rb")) if gzipped else path.open("rb")


def open_with_raw(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """The lines to read (gunzipped if need be) and the raw file under them, whose position
    tells how far reading has got; close both."""
    raw = path.open("rb")
    gzipped = raw.read(2) == GZIP_MAGIC
    raw.seek(0)
    if gzipped:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), raw
    return raw, raw


UNREADABLE = (EOFError, OSError, zlib.error)  # a file gone, or a gzip file cut short or not gzip


def unreadable_reason(exc: BaseException) -> str:
    """What an `UNREADABLE` error says, in a few words."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


UTF8_BOM = b"\xef\xbb\xbf"
LINE_LIMIT = 1 << 20  # bytes of one JSON line at most: a post keeps 10,000 characters
TOO_LONG = f"longer than {LINE_LIMIT:,} bytes: skipped"


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """The lines of a file of JSON lines, numbered from 1: a byte-order mark before the first
    (Windows tools write one) is no part of it, and a line longer than `LINE_LIMIT` is None,
    read past and never held whole (a 200 MB line had taken 900 MB)."""
    read = stream.readline
    number = 0
    while line := read(LINE_LIMIT + 1):  # a line of the limit, and its line break
        number += 1
        if len(line) > LINE_LIMIT and not line.endswith(b"\n"):
            while (rest := read(LINE_LIMIT)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, line.removeprefix(UTF8_BOM) if number == 1 else line


def read_mentions(
    stream: IO[bytes], *, default_source: str = "unknown"
) -> Iterator[Mention | BadLine]:
    """Every line of a stream as a `Mention`, or a `BadLine` saying why it was skipped; a
    stream that cannot be read on (a gzip file cut short) ends with a `CutShort`, after every
    line it could read."""
    number = 0
    try:
        for number, raw in numbered_lines(stream):
            if raw is None:
                yield BadLine(number, TOO_LONG)
                continue
            if not raw.strip():
                continue
            try:
                yield parse_mention(raw, default_source=default_source)
            except MentionError as exc:
                yield BadLine(number, str(exc))
    except UNREADABLE as exc:
        yield CutShort(number + 1, f"cannot be read from here on: {unreadable_reason(exc)}")
