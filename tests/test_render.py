"""Pages as plain text, with untrusted post text made harmless."""

from __future__ import annotations

import random
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crisiswatch.domain import Mention, Page, PageKind, ScoredMention, Totals
from crisiswatch.notify.render import (
    POST_CHARS,
    clean_text,
    headline,
    render_line,
    render_text,
    representative,
)

MentionFactory = Callable[..., Mention]
PageFactory = Callable[..., Page]

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
HOSTILE = "\x1b[2J\x1b]0;owned\x07\r\x00\x9b31m\u202eevil\u2066 \u200b@channel\n\n<!here>"
JOINERS = "\u200c\u200d"
FORMAT = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
"""Every invisible format character this Python knows (Unicode category Cf)."""


def unsafe_characters(text: str) -> list[str]:
    """Characters that could rewrite a terminal or reorder a line: controls (bar the line
    breaks between lines) and direction overrides."""
    return [
        repr(c)
        for c in text
        if c != "\n" and (unicodedata.category(c) == "Cc" or c in BIDI or c in "\u2028\u2029")
    ]


def scored(mention: Mention, negative: float = 0.9) -> ScoredMention:
    return ScoredMention(mention, "kestrel", ("cards",), negative)


class TestCleanText:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("plain text", "plain text"),
            ("a\x1b[2Jb", "a [2Jb"),
            ("bell\x07 nul\x00 del\x7f csi\x9b end", "bell nul del csi end"),
            ("right\u202eto left", "right to left"),
            ("isolate\u2066d\u2069 text", "isolate d text"),
            ("zero\u200bwidth", "zero width"),
            ("  many \t\n\r\n  spaces\u2028and\u2029lines  ", "many spaces and lines"),
            ("", ""),
            ("\x00\x1b\n", ""),
        ],
    )
    def test_cleans(self, raw: str, clean: str) -> None:
        """Control, escape and direction characters go; whitespace collapses to one space."""
        assert clean_text(raw) == clean

    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("pay\u00adpal", "paypal"),
            ("Kestrel\u2060Bank", "KestrelBank"),
            ("\ufeffbom", "bom"),
            ("tag\U000e0041\U000e007f chars", "tag chars"),
            ("arabic\u061cmark", "arabic mark"),
            ("family 👨\u200d👩\u200d👧", "family 👨\u200d👩\u200d👧"),
            ("می\u200cخواهم", "می\u200cخواهم"),
            ("\u200dedge\u200c", "edge"),
            ("run\u200d\u200d\u200dof joiners", "runof joiners"),
            ("by \u200d a space", "by a space"),
        ],
    )
    def test_invisible_format_characters_go(self, raw: str, clean: str) -> None:
        """Invisible format characters are removed, but joiners between visible characters
        (emoji sequences, Persian and Indic words) stay."""
        assert clean_text(raw) == clean

    def test_no_format_character_survives(self) -> None:
        """No character of category Cf survives, but a joiner between two visible ones."""
        kept = {
            f"U+{ord(c):04X}": cleaned
            for c in FORMAT
            if (cleaned := clean_text(f"a{c}b {c}{c}").replace(" ", ""))
            != ("a" + c + "b" if c in JOINERS else "ab")
        }
        assert kept == {}

    def test_no_escape_survives(self) -> None:
        """No ANSI escape, control or direction character survives, whatever the input."""
        cleaned = clean_text(HOSTILE * 3, 1_000)
        assert unsafe_characters(cleaned) == []
        assert "\x1b" not in cleaned

    def test_plain_ascii_is_cleaned_as_any_text_is(self) -> None:
        """Printable ASCII takes a shortcut (no control or format character can be in it): it
        comes out as it does through the full passes, which a word joiner (invisible, removed)
        in front of it forces."""
        rng = random.Random(5)
        alphabet = [*map(chr, range(32, 127)), *" " * 30]
        for _ in range(3_000):
            for limit in (POST_CHARS, 12):
                text = "".join(rng.choices(alphabet, k=rng.randint(0, limit * 4 - 1)))
                assert clean_text(text, limit) == clean_text("\u2060" + text, limit), text

    def test_caps_with_an_ellipsis(self) -> None:
        """A long text is cut to the limit, ending with an ellipsis."""
        cleaned = clean_text("word " * 100, 50)
        assert len(cleaned) <= 50
        assert cleaned.endswith("…")
        assert cleaned.startswith("word word")
        assert not cleaned.endswith(" …")

    def test_exactly_the_limit_is_kept_whole(self) -> None:
        """A text exactly at the limit is not cut."""
        assert clean_text("x" * POST_CHARS) == "x" * POST_CHARS
        assert clean_text("x" * (POST_CHARS + 1)) == "x" * (POST_CHARS - 1) + "…"

    def test_huge_text_is_cheap_and_short(self) -> None:
        """A 10,000-character post renders to at most the default limit."""
        assert len(clean_text("é" * 10_000)) == POST_CHARS


class TestRenderText:
    def test_opened_page(self, make_page: PageFactory, make_mention: MentionFactory) -> None:
        """An opening page shows brand, severity, stage, times, reasons, rules, terms and posts."""
        post = make_mention(
            author="bigaccount",
            author_followers=125_000,
            engagement=3_400,
            url="https://x.example/status/1",
            text="My Kestrel card was swallowed by the ATM, awful",
        )
        text = render_text(make_page(samples=(scored(post),)))
        assert text.splitlines()[0].startswith("── OPENED · kestrel · CRITICAL · flame ")
        assert "2024-03-01 12:00 UTC  (since 2024-03-01 11:55 UTC)" in text
        assert "where    x 75%, reddit 25% · cards" in text  # the latest bucket's platforms
        assert "kestrel: 40 mentions in 5m (8 expected), 75% negative" in text
        assert (
            "why      volume 40 vs 8 expected (alert level 15), in a surge this series sees less "
            "than once a year" in text
        )
        assert "rules    angry-surge" in text
        assert "terms    atm, swallowed" in text
        assert (
            "posts    bigaccount (125,000 followers · 3,400 interactions, x, 90% negative): "
            '"My Kestrel card was '
            'swallowed by the ATM, awful" https://x.example/status/1'
        ) in text
        assert "incident kestrel@20240301T1155Z" in text

    def test_a_brand_wide_incident_stays_about_all_topics(self, make_page: PageFactory) -> None:
        """A crisis of all the brand's mentions that a topic's alert joins is about all topics
        and that one (it had turned into an incident about the topic alone)."""
        assert "· all topics, cards" in render_text(make_page(brand_wide=True))
        assert "· all topics\n" in render_text(make_page(brand_wide=True, topics=()))

    def test_every_reason_on_its_own_line(self, make_page: PageFactory) -> None:
        """Each reason gets a line; only the first is labelled."""
        text = render_text(make_page(reasons=("first reason", "second reason")))
        lines = text.splitlines()
        assert "  why      first reason" in lines
        assert "           second reason" in lines

    def test_at_most_three_posts(
        self, make_page: PageFactory, make_mention: MentionFactory
    ) -> None:
        """At most three sample posts are shown, in the bucket's order."""
        posts = tuple(
            scored(make_mention(author=f"user{n}", id=f"x:{n}", text=f"post {n}")) for n in range(5)
        )
        text = render_text(make_page(samples=posts))
        assert [n for n in range(5) if f"user{n} (" in text] == [0, 1, 2]


class TestRepresentativePosts:
    def post(
        self, make_mention: MentionFactory, n: int, text: str, negative: float = 0.9, **fields: Any
    ) -> ScoredMention:
        return scored(make_mention(id=f"x:{n}", author=f"user{n}", text=text, **fields), negative)

    def test_a_text_is_shown_once_and_complaints_come_first(
        self, make_mention: MentionFactory
    ) -> None:
        """A retweet repeats its post's words: shown once. A question from a big account that
        the samples rank first comes after the complaints."""
        samples = [
            self.post(make_mention, 0, "Is the app down?", 0.4, author_followers=90_000),
            self.post(make_mention, 1, "The ATM ate my card", author_followers=500),
            self.post(make_mention, 2, "RT @user1: the atm  ate my card", author_followers=400),
            self.post(make_mention, 3, "still no card, no answer", 0.97, author_followers=300),
        ]
        shown = representative(samples, 3)
        assert [s.mention.id for s in shown] == ["x:1", "x:3", "x:0"]
        louder = self.post(
            make_mention, 4, "RT @user1: The ATM ate my card", author_followers=900_000
        )
        shown = representative([*samples, louder], 3)
        assert [s.mention.id for s in shown] == ["x:4", "x:3", "x:0"]  # its most-followed copy

    def test_the_loudest_complaint_and_every_source_s_best_are_shown(
        self, make_mention: MentionFactory
    ) -> None:
        """Reddit's authors reach fewer than X's, so a crisis cited on Reddit showed no Reddit
        post; and the most-followed complaint, kept last of the samples, fell off the page."""
        samples = [
            *(
                self.post(make_mention, n, f"x complaint {n}", author_followers=5_000 - n)
                for n in range(6)
            ),
            self.post(make_mention, 6, "reddit complaint", source="reddit", author_followers=40),
            self.post(make_mention, 7, "huge account complaint", author_followers=2_000_000),
        ]
        shown = [s.mention.id for s in representative(samples, 3)]
        assert shown == ["x:0", "x:6", "x:7"]

    def test_post_without_author_or_url(
        self, make_page: PageFactory, make_mention: MentionFactory
    ) -> None:
        """A post without an author or url still renders."""
        post = make_mention(author=None, url=None, author_followers=0, text="hi")
        text = render_text(make_page(samples=(scored(post, 0.25),)))
        assert 'unknown (0 followers, x, 25% negative): "hi"' in text
        assert text.splitlines()[-2].endswith('"hi"')

    def test_resolved_page(self, make_page: PageFactory, make_mention: MentionFactory) -> None:
        """A resolution says what changed and leaves out reasons and posts."""
        page = make_page(
            kind=PageKind.RESOLVED,
            at=datetime(2024, 3, 1, 14, 0, tzinfo=UTC),
            changes=("quiet since 2024-03-01 13:00 UTC",),
            samples=(scored(make_mention(author="someone")),),
        )
        text = render_text(page)
        assert text.startswith("── RESOLVED · kestrel")
        assert "changed  quiet since 2024-03-01 13:00 UTC" in text
        assert "why" not in text
        assert "someone" not in text

    def test_totals_so_far_and_in_all(self, make_page: PageFactory) -> None:
        """A page says how many of the brand's mentions the incident has had so far (the
        resolution: in all), and from when if the oldest buckets are no longer held; nothing
        when not known or no more than the latest bucket, which the page already shows."""
        latest = make_page().incident.latest.bucket.start
        started = latest - timedelta(minutes=20)
        totals = Totals(started, 1240, 756)
        assert "so far" not in render_text(make_page(started_at=started))
        one_bucket = make_page(totals=replace(totals, since=latest), started_at=latest)
        assert "so far" not in render_text(one_bucket)
        text = render_text(make_page(totals=totals, started_at=started))
        assert "  so far   1,240 mentions of the brand, 61% negative" in text
        resolved = make_page(kind=PageKind.RESOLVED, totals=totals, started_at=started)
        assert "  in all   1,240 mentions of the brand, 61% negative" in render_text(resolved)
        clipped = replace(totals, since=started + timedelta(minutes=10))
        assert "mentions of the brand since 2024-03-01 11:45 UTC, 61%" in render_text(
            make_page(totals=clipped, started_at=started)
        )

    def test_changes_listed(self, make_page: PageFactory) -> None:
        """An escalation lists its changes on one line."""
        page = make_page(
            kind=PageKind.ESCALATED, changes=("severity warning → critical", "now also on reddit")
        )
        assert "changed  severity warning → critical; now also on reddit" in render_text(page)

    def test_hostile_post_is_harmless(
        self, make_page: PageFactory, make_mention: MentionFactory
    ) -> None:
        """A post with escapes and overrides in every field renders with none of them."""
        post = make_mention(
            text=HOSTILE,
            author=f"evil{HOSTILE}",
            url=f"https://x.example/{HOSTILE}",
            source=f"x{HOSTILE}",
        )
        page = make_page(
            kind=PageKind.ESCALATED,
            samples=(scored(post),),
            summary=f"kestrel: {HOSTILE}",
            reasons=(f"negative post by evil{HOSTILE} with 125,000 followers",),
            sources=(f"x{HOSTILE}",),
            changes=(f"now also on x{HOSTILE}",),
        )
        text = render_text(page)
        assert unsafe_characters(text) == []
        assert len(text.splitlines()) == len(
            render_text(
                make_page(
                    kind=PageKind.ESCALATED, samples=(scored(make_mention()),), changes=("c",)
                )
            ).splitlines()
        )

    def test_hostile_line_page(self, make_page: PageFactory) -> None:
        """The one-line form is one clean line too."""
        line = render_line(make_page(summary=HOSTILE))
        assert "\n" not in line
        assert unsafe_characters(line) == []

    def test_headline(self, make_page: PageFactory) -> None:
        """The headline names the kind, brand, severity and stage."""
        assert headline(make_page()) == "OPENED · kestrel · CRITICAL · flame"
