"""Pages as readable text: what is happening, how bad, where, since when, why, and the posts.

Post texts are untrusted: control characters (a terminal escape sequence in a post could rewrite
the screen) and invisible format characters (which can hide or reorder text) are removed,
whitespace collapsed and length capped before they are shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from crisiswatch.domain import Incident, Mention, Page, PageKind, ScoredMention

# Controls, direction marks and overrides, and the zero-width space stand between words: a space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069]+")
# Every other format character (Unicode category Cf, to Unicode 15.1) is invisible: removed, so
# the text reads as it showed. Zero-width (non-)joiners are not here: see _LOOSE_JOINER.
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2\u180e\u2060-\u2064\u206a-\u206f"
    "\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]+"
)
# ZWJ (emoji sequences, Indic scripts) and ZWNJ (Persian, Indic scripts) are kept only between
# two visible characters: one at an edge, by a space or beside another joiner joins nothing.
_LOOSE_JOINER = re.compile(
    r"(?<![^\s\u200c\u200d])[\u200c\u200d]|[\u200c\u200d](?![^\s\u200c\u200d])"
)
_SPACES = re.compile(r"\s+")
_REPOST = re.compile(r"rt @\w{1,50}: ")  # X's retweet prefix: the same words as the post it repeats
POST_CHARS = 160
CONSOLE_POSTS = 3


def clean_text(text: str, limit: int = POST_CHARS) -> str:
    """One line of at most `limit` characters with no control, direction or invisible format
    characters (bar joiners between visible characters), in a few linear passes."""
    text = text[: limit * 4]
    if text.isascii() and text.isprintable():  # most posts: no control or format character
        flat = " ".join(text.split())
    else:
        spaced = _CONTROL.sub(" ", _INVISIBLE.sub("", text))
        flat = _SPACES.sub(" ", _LOOSE_JOINER.sub("", spaced)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def headline(page: Page) -> str:
    incident = page.incident
    return (
        f"{page.kind.value.upper()} · {incident.brand} · {incident.severity.label.upper()} · "
        f"{incident.stage.label}"
    )


def totals_text(incident: Incident) -> str | None:
    """All the brand's mentions over the incident so far ('1,240 mentions of the brand, 61%
    negative'), with since when if the oldest of its buckets are no longer held; None when not
    known or no more than its latest bucket (the page's other numbers say that)."""
    totals = incident.totals
    if totals is None or not totals.count or totals.since >= incident.latest.bucket.start:
        return None
    since = f" since {_time(totals.since)}" if totals.since > incident.started_at else ""
    return f"{totals.count:,} mentions of the brand{since}, {totals.negative_share:.0%} negative"


def render_text(page: Page, to: str = "") -> str:
    """The page as a plain-text block for a terminal or a log; `to` says who it is for."""
    incident = page.incident
    bucket = incident.latest.bucket
    lines = [f"── {headline(page)} " + "─" * 20]
    if to:
        lines.append(f"  to       {to}")
    lines.append(f"  when     {_time(page.at)}  (since {_time(incident.started_at)})")
    where = clean_text(incident.platforms, 200)  # source names come from posts
    lines.append(f"  where    {where} · {clean_text(incident.scope, 200)}")
    lines.append(f"  what     {clean_text(incident.summary, 200)}")
    total = totals_text(incident)
    if total:
        lines.append(f"  {'in all' if page.kind is PageKind.RESOLVED else 'so far':<8} {total}")
    if page.changes:
        lines.append(f"  changed  {clean_text('; '.join(page.changes), 400)}")
    if page.kind is not PageKind.RESOLVED:
        for number, reason in enumerate(shown_reasons(page)):
            lines.append(f"  {'why' if number == 0 else '':<8} {reason}")
        lines.append(f"  rules    {', '.join(incident.rules)}")
        terms = ", ".join(term for term, _ in bucket.top_terms[:6])
        if terms:
            lines.append(f"  terms    {clean_text(terms, 120)}")
        for number, scored in enumerate(representative(bucket.samples, CONSOLE_POSTS)):
            lines.append(f"  {'posts' if number == 0 else '':<8} {post_line(scored)}")
    lines.append(f"  incident {incident.id}")
    return "\n".join(lines)


def representative(samples: Sequence[ScoredMention], count: int) -> list[ScoredMention]:
    """The `count` posts to show of a bucket's samples (most representative first): each text
    once (a retweet repeats its post); the most-followed complaint and the best complaint of
    each source first (a crisis cited on Reddit shows a Reddit post, though Reddit's authors
    reach fewer than X's), then the other complaints, then the rest, as the samples rank
    them; shown complaints first."""
    posts = list(_distinct(samples).values())
    complaints = [s for s in posts if s.is_negative]
    first: list[ScoredMention] = []
    if complaints:
        first.append(max(complaints, key=lambda s: s.mention.author_followers))
        for source in dict.fromkeys(s.mention.source for s in complaints):
            first.append(next(s for s in complaints if s.mention.source == source))
    chosen: dict[int, ScoredMention] = {}
    for scored in (*first, *complaints, *posts):
        if len(chosen) == count:
            break
        chosen.setdefault(id(scored), scored)
    rank = {id(s): n for n, s in enumerate(posts)}
    return sorted(chosen.values(), key=lambda s: (not s.is_negative, rank[id(s)]))


def _distinct(samples: Sequence[ScoredMention]) -> dict[str, ScoredMention]:
    """The samples by their words (case, spacing and a retweet's prefix aside): of the same
    words, the post of the most-followed author, in the place of the first."""
    found: dict[str, ScoredMention] = {}
    for scored in samples:
        words = _SPACES.sub(" ", scored.mention.text.casefold()).strip()
        key = _REPOST.sub("", words, count=1)
        kept = found.get(key)
        if kept is None or scored.mention.author_followers > kept.mention.author_followers:
            found[key] = scored
    return found


def interactions(mention: Mention) -> str:
    """The post's public interactions when known, as a suffix to its author's followers."""
    return f" · {mention.engagement:,} interactions" if mention.engagement else ""


def post_line(scored: ScoredMention) -> str:
    mention = scored.mention
    author = clean_text(mention.author or "unknown", 40)
    link = f" {clean_text(mention.url, 120)}" if mention.url else ""
    return (
        f"{author} ({mention.author_followers:,} followers{interactions(mention)}, "
        f"{clean_text(mention.source, 40)}, "
        f'{scored.negative:.0%} negative): "{clean_text(mention.text)}"{link}'
    )


def render_line(page: Page) -> str:
    """One line per page, for backtests and summaries."""
    incident = page.incident
    line = (
        f"{_time(page.at)}  {page.kind.value:<9} {incident.severity.label:<8} "
        f"{incident.stage.label:<5} {incident.brand:<12} {','.join(incident.rules)}  "
        f"{clean_text(incident.summary, 100)}"
    )
    changes = shown_changes(page)
    return line + (f"  [{clean_text('; '.join(changes), 160)}]" if changes else "")


def shown_reasons(page: Page) -> tuple[str, ...]:
    """Why it pages, as `render_text` shows it: the reasons its incident carries (its latest
    alert's conditions, in numbers), each cleaned; none for a resolution."""
    if page.kind is PageKind.RESOLVED:
        return ()
    return tuple(clean_text(reason, 300) for reason in page.incident.reasons)


def shown_changes(page: Page) -> tuple[str, ...]:
    """What changed since the incident's last page, as `render_line` shows it: none for a
    resolution."""
    return () if page.kind is PageKind.RESOLVED else page.changes
