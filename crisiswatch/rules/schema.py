"""The rule language: YAML documents → typed, validated rules.

A rule file holds `rules:`, a list of rules. Each rule has an id, a scope (brands, topics, and
optionally a mention filter: sources, languages, author reach, keywords, a regex), a `when` made
of conditions (`crisiswatch/rules/conditions.py`) combined with `all` / `any`, how long it must
hold (`for`), how long its incident stays open after it stops holding (`keep_firing_for`), a
severity, a stage, a route and a summary template. Unknown keys are errors (see
`rules/README.md`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cached_property
from itertools import cycle
from typing import Any, Literal

import orjson
import re2
from pydantic import Field, PrivateAttr, field_validator

from crisiswatch.config import Duration, Strict, check_identifier
from crisiswatch.domain import ALL_TOPICS, Mention, SeriesKey, Severity, Signal, Stage
from crisiswatch.durations import format_duration
from crisiswatch.enrich.attribution import TermIndex
from crisiswatch.rules.conditions import Condition, count_text

_PLACEHOLDER = re.compile(r"\{(\w{1,40})\}")
_BRACED = re.compile(r"\{[^{}]{0,60}\}|[{}]")  # a placeholder-like span, or a lone brace
# What each placeholder of a summary says of a signal; only those a summary names are made.
_SUMMARY_VALUES: dict[str, Callable[[Signal], str]] = {
    "brand": lambda s: s.series.brand,
    "topic": lambda s: "all topics" if s.series.topic == ALL_TOPICS else s.series.topic,
    "series": lambda s: str(s.series),
    "count": lambda s: str(s.bucket.count),
    "expected": lambda s: count_text(s.volume_expected),
    "negative_pct": lambda s: f"{s.bucket.negative_share:.0%}",
    "usual_negative_pct": lambda s: f"{s.negative_expected:.0%}",
    "authors": lambda s: str(s.bucket.unique_authors),
    "reach": lambda s: f"{s.bucket.reach:,}",
    "rise": lambda s: f"×{s.bucket.count / max(s.previous_count, 1):.1f}",
    "window": lambda s: format_duration(s.bucket.end - s.bucket.start),
}
PLACEHOLDERS = frozenset(_SUMMARY_VALUES)
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")  # ISO 639, maybe a region: en, pt-br
MAX_REGEX = 500  # characters of a pattern
REGEX_TEXT = 2_000  # characters of a post a regex reads

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the message goes into our problem line instead


def compile_regex(pattern: str) -> Any:
    """Compile with RE2: linear time in the text, so no pattern can hang the daemon."""
    if len(pattern) > MAX_REGEX:
        raise ValueError(f"regex longer than {MAX_REGEX} characters")
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"invalid regex {pattern!r}: {reason} (RE2 syntax)") from None


class Scope(Strict):
    """Which series a rule watches, and optionally which mentions those series count."""

    brands: list[str] | Literal["all"] = "all"
    topics: list[str] | Literal["all"] = "all"  # "*" names a brand's roll-up of every topic
    # A mention filter: with any of these, the rule's series count only the mentions that pass.
    sources: list[str] | None = None
    languages: list[str] | None = None
    min_followers: int | None = Field(None, ge=0)
    keywords: list[str] | None = None  # any of these words or phrases
    regex: str | None = None  # RE2 syntax, case-sensitive unless it starts with (?i)

    _pattern: Any = PrivateAttr(default=None)
    _keywords: TermIndex[bool] = PrivateAttr(default_factory=TermIndex)

    @field_validator("brands", "topics", "sources", "languages", "keywords")
    @classmethod
    def _not_empty(cls, value: list[str] | str | None) -> list[str] | str | None:
        if value == []:
            raise ValueError(
                "an empty list matches nothing, so the rule would never fire; "
                "leave the key out to match every one"
            )
        return value

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, languages: list[str] | None) -> list[str] | None:
        for code in languages or ():
            if _LANGUAGE_CODE.fullmatch(code.lower()) is None:
                raise ValueError(
                    f"{code!r} is not a language code; mentions carry codes like en, de, pt-br"
                )
            if code != code.lower():
                raise ValueError(
                    f"language codes are lowercase, as mentions carry them: {code!r} would "
                    f"never match; did you mean {code.lower()!r}?"
                )
        return languages

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_regex(pattern)
        return pattern

    def model_post_init(self, context: Any) -> None:
        if self.regex is not None:
            self._pattern = compile_regex(self.regex)
        for term in self.keywords or ():
            self._keywords.add(term, True)

    @cached_property
    def view(self) -> str:
        """The name of this scope's mention filter ("" when it counts every mention)."""
        spec = self.model_dump(include=_FILTER_FIELDS, exclude_none=True)
        if not spec:
            return ""
        return "v" + hashlib.sha1(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]

    def passes(self, mention: Mention, tokens: Sequence[str]) -> bool:
        """Whether a mention passes the mention filter."""
        if self.sources is not None and mention.source not in self.sources:
            return False
        if self.languages is not None and mention.lang not in self.languages:
            return False
        if self.min_followers is not None and mention.author_followers < self.min_followers:
            return False
        if self.keywords is not None and not self._keywords.find(tokens):
            return False
        return self._pattern is None or self._pattern.search(mention.text[:REGEX_TEXT]) is not None

    def covers(self, series: SeriesKey) -> bool:
        if series.view != self.view:
            return False
        if self.brands != "all" and series.brand not in self.brands:
            return False
        return self.topics == "all" or series.topic in self.topics


_FILTER_FIELDS = {"sources", "languages", "min_followers", "keywords", "regex"}


class Rule(Strict):
    id: str
    description: str = ""
    scope: Scope = Scope()
    when: Condition
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(hours=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    stage: Literal["spark", "flame", "fire"] = "spark"
    route: str = "default"
    labels: dict[str, str] = {}
    summary: str = "{series}: {count} mentions, {negative_pct} negative"

    _check_id = field_validator("id")(check_identifier)

    @field_validator("summary")
    @classmethod
    def _placeholders(cls, summary: str) -> str:
        """Braces hold a known placeholder and nothing else: text that only looks like one
        (Alertmanager's `{{ $labels.brand }}`, `{ count }`, `{count:>5}`) would otherwise go
        out on pages as written."""
        known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
        if "{{" in summary:
            raise ValueError(
                "summary: write a placeholder in single braces, as {brand}, not as an "
                f"Alertmanager template ({{{{ ... }}}}); known: {known}"
            )
        for braced in _BRACED.finditer(summary):
            text = braced.group(0)
            name = _PLACEHOLDER.fullmatch(text)
            if name and name.group(1) in PLACEHOLDERS:
                continue
            if name:
                raise ValueError(f"unknown placeholder {text} in summary; known: {known}")
            raise ValueError(
                f"{text!r} in summary is not a placeholder: braces hold only a placeholder's "
                f"name, with no spaces or format (as {{count}}); known: {known}"
            )
        return summary

    @cached_property
    def severity_level(self) -> Severity:
        return Severity[self.severity.upper()]

    @cached_property
    def stage_level(self) -> Stage:
        return Stage[self.stage.upper()]

    @cached_property
    def summary_parts(self) -> tuple[str, ...]:
        """The summary split at its placeholders: text, name, text, name, …, text."""
        return tuple(_PLACEHOLDER.split(self.summary))

    def render_summary(self, signal: Signal) -> str:
        """The summary with the signal's numbers in it (every alert has one, so a close with
        a thousand alerts makes only the values their summaries name)."""
        return "".join(
            _SUMMARY_VALUES[part](signal) if odd else part
            for odd, part in zip(cycle((False, True)), self.summary_parts)
        )


class RuleFile(Strict):
    rules: list[Rule]
