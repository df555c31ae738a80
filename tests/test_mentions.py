"""Mention JSON lines: parsing, validation, reading files, and writing them back."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from crisiswatch.domain import Mention
from crisiswatch.mentions import (
    LINE_LIMIT,
    MAX_COUNT,
    MAX_FIELD,
    MAX_TEXT,
    BadLine,
    MentionError,
    mention_from_dict,
    mention_to_dict,
    open_lines,
    parse_mention,
    plausible_count,
    read_mentions,
)

FULL = {
    "id": "x:1",
    "source": "x",
    "created_at": "2015-02-24T19:35:52Z",
    "text": "My Kestrel card was swallowed",
    "author": "alice",
    "author_followers": 120,
    "engagement": 42,
    "url": "https://example.com/1",
    "lang": "en",
    "brand": "kestrel",
}


def line(**fields: object) -> bytes:
    return orjson.dumps(fields)


class TestParseMention:
    def test_all_fields(self) -> None:
        """A line with every field gives a mention holding each of them."""
        mention = parse_mention(orjson.dumps(FULL))
        assert mention == Mention(
            id="x:1",
            source="x",
            created_at=datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC),
            text="My Kestrel card was swallowed",
            brand="kestrel",
            author="alice",
            author_followers=120,
            url="https://example.com/1",
            lang="en",
            engagement=42,
        )

    def test_only_required_fields(self) -> None:
        """id, created_at and text suffice; the rest take defaults, the source the caller's."""
        mention = parse_mention(
            line(id="r:9", created_at="2015-02-24T19:35:52Z", text="hi"), default_source="reddit"
        )
        assert mention.source == "reddit"
        assert (mention.author, mention.url, mention.lang, mention.brand) == (None,) * 4
        assert mention.author_followers == 0 and mention.engagement == 0

    def test_accepts_str_as_well_as_bytes(self) -> None:
        """A str line parses the same as its bytes."""
        raw = orjson.dumps(FULL)
        assert parse_mention(raw.decode()) == parse_mention(raw)

    @pytest.mark.parametrize(
        ("stamp", "expected"),
        [
            ("2015-02-24T19:35:52Z", datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)),
            ("2015-02-24T19:35:52+02:00", datetime(2015, 2, 24, 17, 35, 52, tzinfo=UTC)),
            ("2015-02-24T01:00:00-05:00", datetime(2015, 2, 24, 6, 0, tzinfo=UTC)),
            ("2015-02-24T19:35:52", datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)),
            ("2015-02-24T19:35:52.250Z", datetime(2015, 2, 24, 19, 35, 52, 250000, tzinfo=UTC)),
        ],
    )
    def test_times_become_utc(self, stamp: str, expected: datetime) -> None:
        """Any offset is converted to UTC and a naive time is taken as UTC."""
        created = parse_mention(line(id="a", created_at=stamp, text="t")).created_at
        assert created == expected
        assert created.utcoffset() is not None
        assert created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("raw", "words"),
        [
            (b'{"id": "a", "text": ', "not valid JSON"),
            (b"not json at all", "not valid JSON"),
            (b'["id", "a"]', "expected a JSON object"),
            (b'"a string"', "expected a JSON object"),
            (b'{"created_at": "2015-02-24T19:35:52Z", "text": "t"}', "'id' is missing"),
            (b'{"id": "", "created_at": "2015-02-24T19:35:52Z", "text": "t"}', "'id' is empty"),
            (b'{"id": 7, "created_at": "2015-02-24T19:35:52Z", "text": "t"}', "'id'"),
            (b'{"id": "a", "text": "t"}', "'created_at' is missing"),
            (b'{"id": "a", "created_at": 1424806552, "text": "t"}', "'created_at'"),
            (b'{"id": "a", "created_at": "2015-02-24T19:35:52Z"}', "'text' is missing"),
            (b'{"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": 5}', "'text'"),
            (b'{"id": "a", "created_at": "yesterday", "text": "t"}', "not an ISO-8601 time"),
            (b'{"id": "a", "created_at": "2015-02-30T10:00:00Z", "text": "t"}', "ISO-8601"),
        ],
    )
    def test_malformed_lines(self, raw: bytes, words: str) -> None:
        """Each kind of malformed line raises MentionError saying what is wrong."""
        with pytest.raises(MentionError) as caught:
            parse_mention(raw)
        assert words in str(caught.value)

    @pytest.mark.parametrize("key", ["author_followers", "engagement"])
    @pytest.mark.parametrize("count", [True, False, "120", 1.5, -1, [1], 10**10 + 1, 2**64 - 1])
    def test_bad_counts(self, key: str, count: object) -> None:
        """Followers and engagement must be whole numbers from 0 to ten billion (more would
        overflow a bucket's sums, and no account has them); a bool is not one."""
        with pytest.raises(MentionError, match=key):
            parse_mention(line(id="a", created_at="2015-02-24T19:35:52Z", text="t", **{key: count}))

    def test_null_followers_mean_zero(self) -> None:
        """A null follower count is read as zero, not rejected."""
        mention = parse_mention(
            line(id="a", created_at="2015-02-24T19:35:52Z", text="t", author_followers=None)
        )
        assert mention.author_followers == 0

    @pytest.mark.parametrize("key", ["source", "author", "url", "lang", "brand"])
    def test_optional_field_of_wrong_type(self, key: str) -> None:
        """An optional text field holding a non-string is rejected, naming the field."""
        fields: dict[str, object] = {"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": "t"}
        fields[key] = 42
        with pytest.raises(MentionError, match=repr(key)):
            parse_mention(orjson.dumps(fields))

    @pytest.mark.parametrize("stamp", ["9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00"])
    def test_time_out_of_range_after_utc_conversion(self, stamp: str) -> None:
        """A time that leaves the representable range in UTC is a MentionError, not a crash."""
        with pytest.raises(MentionError, match="created_at"):
            parse_mention(line(id="a", created_at=stamp, text="t"))

    def test_long_text_is_capped(self) -> None:
        """A very long text is cut at MAX_TEXT characters."""
        text = "é" * (MAX_TEXT + 5_000)
        mention = parse_mention(line(id="a", created_at="2015-02-24T19:35:52Z", text=text))
        assert len(mention.text) == MAX_TEXT
        assert mention.text == text[:MAX_TEXT]

    def test_long_fields_are_capped(self) -> None:
        """Ids, authors and other short fields are cut at MAX_FIELD characters."""
        mention = parse_mention(
            line(id="i" * 5_000, created_at="2015-02-24T19:35:52Z", text="t", author="a" * 5_000)
        )
        assert len(mention.id) == MAX_FIELD
        assert mention.author is not None
        assert len(mention.author) == MAX_FIELD

    def test_empty_optional_string_is_none(self) -> None:
        """An empty author or source counts as absent."""
        mention = parse_mention(
            line(id="a", created_at="2015-02-24T19:35:52Z", text="t", author="", source="")
        )
        assert mention.author is None
        assert mention.source == "unknown"


class TestReadMentions:
    def test_bad_lines_are_numbered_and_reading_goes_on(self) -> None:
        """Bad lines become BadLine with 1-based numbers; blank lines are skipped silently."""
        good = orjson.dumps(FULL)
        stream = io.BytesIO(
            b"\n".join(
                [
                    good,
                    b"{broken",
                    b"",
                    b'{"id": "b", "text": "t"}',
                    good.replace(b"x:1", b"x:2"),
                    b"   ",
                    b"[]",
                ]
            )
            + b"\n"
        )
        items = list(read_mentions(stream))
        assert [type(item) for item in items] == [Mention, BadLine, BadLine, Mention, BadLine]
        bad = [item for item in items if isinstance(item, BadLine)]
        assert [b.line_number for b in bad] == [2, 4, 7]
        assert "not valid JSON" in bad[0].reason
        assert "created_at" in bad[1].reason
        assert "JSON object" in bad[2].reason
        assert [m.id for m in items if isinstance(m, Mention)] == ["x:1", "x:2"]

    def test_out_of_range_time_is_a_bad_line(self) -> None:
        """A time that overflows in UTC is skipped as a bad line and reading goes on."""
        stream = io.BytesIO(
            b'{"id": "a", "created_at": "9999-12-31T23:30:00-01:00", "text": "t"}\n'
            + orjson.dumps(FULL)
            + b"\n"
        )
        first, second = read_mentions(stream)
        assert isinstance(first, BadLine)
        assert first.line_number == 1
        assert isinstance(second, Mention)

    def test_default_source(self) -> None:
        """Mentions without a source take the reader's default source."""
        stream = io.BytesIO(b'{"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": "t"}\n')
        (mention,) = read_mentions(stream, default_source="replay")
        assert isinstance(mention, Mention)
        assert mention.source == "replay"

    def test_a_byte_order_mark_before_the_first_line_is_no_part_of_it(self) -> None:
        """A file saved by a Windows tool starts with one: its first mention is read, not
        skipped as malformed."""
        line = b'{"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": "t"}\n'
        first, second = read_mentions(io.BytesIO(b"\xef\xbb\xbf" + line + b"\xef\xbb\xbf" + line))
        assert isinstance(first, Mention) and first.id == "a"
        assert isinstance(second, BadLine) and second.line_number == 2

    def test_a_line_over_the_limit_is_a_bad_line_never_held_whole(self) -> None:
        """A line longer than `LINE_LIMIT` is skipped as a bad line saying so, read past a
        limit at a time, and the lines after it are read as ever."""
        line = b'{"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": "t"}\n'
        huge = b'{"text": "' + b"a" * (3 * LINE_LIMIT) + b'"}\n'
        stream = io.BytesIO(huge + line)
        sizes: list[int] = []
        readline = stream.readline
        stream.readline = lambda limit=-1: sizes.append(limit) or readline(limit)  # type: ignore[method-assign]
        first, second = read_mentions(stream)
        assert isinstance(first, BadLine) and "longer than 1,048,576 bytes" in first.reason
        assert isinstance(second, Mention) and second.id == "a"
        assert max(sizes) <= LINE_LIMIT + 1  # a limit and its line break at a time

    @pytest.mark.parametrize("newline", [b"\n", b""])
    def test_a_line_of_the_limit_is_read(self, newline: bytes) -> None:
        """A line of exactly `LINE_LIMIT` bytes is a line (with its line break or, last, none);
        one byte more is over the limit."""
        head = b'{"id": "a", "created_at": "2015-02-24T19:35:52Z", "text": "'
        line = head + b"t" * (LINE_LIMIT - len(head) - 2) + b'"}'
        assert len(line) == LINE_LIMIT
        (item,) = read_mentions(io.BytesIO(line + newline))
        assert isinstance(item, Mention)
        (item,) = read_mentions(io.BytesIO(line[:-2] + b't"}' + newline))
        assert isinstance(item, BadLine) and "longer than" in item.reason

    def test_invalid_utf8_is_a_bad_line(self) -> None:
        """A line that is not UTF-8 is reported, not raised."""
        stream = io.BytesIO(b'{"id": "a\xff", "created_at": "2015-02-24T19:35:52Z", "text": "t"}\n')
        (item,) = read_mentions(stream)
        assert isinstance(item, BadLine)
        assert item.line_number == 1


class TestOpenLines:
    @pytest.mark.parametrize("gzipped", [False, True])
    def test_plain_and_gzipped(self, tmp_path: Path, gzipped: bool) -> None:
        """A plain and a gzipped file read as the same mentions."""
        content = orjson.dumps(FULL) + b"\n" + orjson.dumps({**FULL, "id": "x:2"}) + b"\n"
        path = tmp_path / ("m.jsonl.gz" if gzipped else "m.jsonl")
        path.write_bytes(gzip.compress(content) if gzipped else content)
        with open_lines(path) as stream:
            items = list(read_mentions(stream))
        assert [m.id for m in items if isinstance(m, Mention)] == ["x:1", "x:2"]

    def test_gzip_is_detected_by_content_not_name(self, tmp_path: Path) -> None:
        """A gzipped file without a .gz suffix is still gunzipped."""
        path = tmp_path / "m.jsonl"
        path.write_bytes(gzip.compress(orjson.dumps(FULL) + b"\n"))
        with open_lines(path) as stream:
            assert stream.read().startswith(b'{"id":"x:1"')

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file yields nothing."""
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")
        with open_lines(path) as stream:
            assert list(read_mentions(stream)) == []


class TestMentionToDict:
    def test_round_trip_all_fields(self, make_mention: Callable[..., Mention]) -> None:
        """mention_to_dict then mention_from_dict gives back an equal mention."""
        mention = make_mention(brand="kestrel", author_followers=5_000, engagement=17)
        assert mention_from_dict(mention_to_dict(mention)) == mention

    def test_round_trip_minimal(self, make_mention: Callable[..., Mention]) -> None:
        """Absent optional fields are left out of the object and come back absent."""
        mention = make_mention(author=None, url=None, lang=None, author_followers=0)
        obj = mention_to_dict(mention)
        assert set(obj) == {"id", "source", "created_at", "text"}
        assert mention_from_dict(obj) == mention

    def test_round_trip_keeps_sub_second_times(self, make_mention: Callable[..., Mention]) -> None:
        """A time with microseconds survives the round trip."""
        moment = datetime(2024, 3, 1, 12, 0, 1, 123456, tzinfo=UTC)
        mention = make_mention(created_at=moment)
        assert mention_from_dict(mention_to_dict(mention)).created_at == moment

    def test_time_written_in_utc_with_z(self, make_mention: Callable[..., Mention]) -> None:
        """The written time is UTC with a Z suffix, parseable as JSON lines again."""
        obj = mention_to_dict(make_mention(created_at=datetime(2024, 3, 1, 12, 0, tzinfo=UTC)))
        assert obj["created_at"] == "2024-03-01T12:00:00Z"
        assert parse_mention(orjson.dumps(obj)).created_at == datetime(2024, 3, 1, 12, tzinfo=UTC)


def test_a_language_code_is_read_lowercase() -> None:
    """`pt-BR` from an ingest line is `pt-br`, as rules must write it (so a rule can match)."""
    line = orjson.dumps(
        {"id": "a", "created_at": "2026-03-02T12:00:00Z", "text": "t", "lang": "pt-BR"}
    )
    assert parse_mention(line).lang == "pt-br"


@pytest.mark.parametrize(
    ("value", "read"),
    [(120, 120), (120.9, 120), (0, 0), (None, 0), ("12k", 0), (True, 0), (-5, 0), (1e20, 0),
     (float("nan"), 0), (MAX_COUNT, MAX_COUNT), ({"n": 1}, 0)],
)  # fmt: skip
def test_counts_from_an_api_are_read_leniently(value: object, read: int) -> None:
    """A source's follower or engagement count of the wrong shape reads as 0: it must cost
    neither the post nor, at 1e20, the daemon (a bucket's reach overflowed the page's JSON)."""
    assert plausible_count(value) == read
