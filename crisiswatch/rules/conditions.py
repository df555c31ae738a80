"""The conditions a rule can put on a closed bucket's signal.

Each condition is a small model with `holds(signal, context)`, which returns a readable sentence
with the numbers when it holds and None when it does not. `Condition` combines them with `all`
and `any`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator, model_validator

from crisiswatch.config import Strict
from crisiswatch.detect.volume import LONGEST_PERIOD, recurrence
from crisiswatch.detect.volume import SENSITIVITY as VOLUME_SENSITIVITY
from crisiswatch.domain import Signal

Sensitivity = Literal["low", "balanced", "high"]
NEGATIVE_SENSITIVITY: dict[str, float] = {"low": 0.9995, "balanced": 0.995, "high": 0.98}


@dataclass(frozen=True, slots=True)
class Context:
    """What a condition may know beyond the signal."""

    expected_volume_factor: float = 1.0  # a planned event says volume ×N is expected now


def count_text(expected: float) -> str:
    """An expected count as people read it: 0.4, 3.2, 57."""
    return f"{expected:.1f}" if expected < 10 else f"{expected:.0f}"


def how_often(period: timedelta) -> str:
    """How often something happens, as people say it: 'about once in 3 months'."""
    if period >= LONGEST_PERIOD:
        return "less than once a year"
    days = period / timedelta(days=1)
    for unit, length in (("month", 30.4), ("week", 7.0), ("day", 1.0), ("hour", 1 / 24)):
        if days >= length * 0.95:  # 6.7 days is about once a week
            n = round(days / length)
            if n > 1:
                return f"about once in {n} {unit}s"
            return f"about once {'an' if unit == 'hour' else 'a'} {unit}"
    return "more than once an hour"


class _Scored(Strict):
    """A condition on a detector's score (0 to 1): a named sensitivity (`high` pages most) or,
    instead, an explicit `min_score` the score must reach (a higher one pages less)."""

    sensitivity: Sensitivity = "balanced"
    min_score: float | None = Field(None, gt=0.0, lt=1.0)

    @field_validator("sensitivity", mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        # A number here once was the score threshold, which paged less the higher it was.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                f"sensitivity is low, balanced or high (high pages most); for a score the "
                f"condition must reach, write {{min_score: {value}}} (a higher one pages less)"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> _Scored:
        if self.min_score is not None and "sensitivity" in self.model_fields_set:
            raise ValueError("give `sensitivity` or `min_score`, not both")
        return self

    def threshold(self, presets: dict[str, float]) -> float:
        """The score the condition needs."""
        return presets[self.sensitivity] if self.min_score is None else self.min_score


class VolumeSpike(_Scored):
    """The bucket's count is surprising for this series at this time of day."""

    @property
    def floor(self) -> int:
        """Any: the last two hours' total can be surprising even after an empty bucket."""
        return 0

    def holds(self, signal: Signal, context: Context) -> str | None:
        if signal.volume_score < self.threshold(VOLUME_SENSITIVITY):
            return None
        factor = context.expected_volume_factor
        count = signal.bucket.count
        if factor != 1.0:
            if count < factor * signal.volume_upper:
                return None  # a planned event explains this much volume
            return (
                f"volume {count} above ×{factor:g} its alert level "
                f"(planned event; alert level {count_text(signal.volume_upper)})"
            )
        return (
            f"volume {count} vs {count_text(signal.volume_expected)} expected "
            f"(alert level {count_text(signal.volume_upper)}), in a surge this series sees "
            f"{how_often(recurrence(signal.volume_score, signal.bucket.end - signal.bucket.start))}"
        )


class NegativeShare(Strict):
    """At least this share of at least `min_count` mentions is negative."""

    above: float = Field(ge=0.0, le=1.0)
    min_count: int = Field(10, ge=1)

    @property
    def floor(self) -> int:
        """The least count of a bucket this can hold on."""
        return self.min_count

    def holds(self, signal: Signal, context: Context) -> str | None:
        bucket = signal.bucket
        if bucket.count < self.min_count or bucket.negative_share < self.above:
            return None
        return (
            f"negative share {bucket.negative_share:.0%} (at least {self.above:.0%}) "
            f"of {bucket.count} mentions"
        )


class NegativeSpike(_Scored):
    """The negative share is well above the series' usual share."""

    min_count: int = Field(10, ge=1)

    @property
    def floor(self) -> int:
        """The least count of a bucket this can hold on."""
        return self.min_count

    def holds(self, signal: Signal, context: Context) -> str | None:
        bucket = signal.bucket
        threshold = self.threshold(NEGATIVE_SENSITIVITY)
        if bucket.count < self.min_count or signal.negative_score < threshold:
            return None
        return (
            f"negative share {bucket.negative_share:.0%} vs usual "
            f"{signal.negative_expected:.0%} ({bucket.negative_count} of {bucket.count})"
        )


class HighReachNegative(Strict):
    """One negative post from an author with a very large audience."""

    min_followers: int = Field(ge=1)
    min_negative: float = Field(0.7, ge=0.5, le=1.0)

    @property
    def floor(self) -> int:
        """A sample post is a counted one."""
        return 1

    def holds(self, signal: Signal, context: Context) -> str | None:
        for scored in signal.bucket.samples:
            mention = scored.mention
            if mention.author_followers >= self.min_followers and (
                scored.negative >= self.min_negative
            ):
                who = mention.author or "an author"
                return f"negative post by {who} with {mention.author_followers:,} followers"
        return None


class KeywordBurst(Strict):
    """Mentions with any of these words or phrases jump to `ratio` × their usual count."""

    terms: list[str] = Field(min_length=1)
    min_count: int = Field(5, ge=1)
    ratio: float = Field(3.0, gt=1.0)

    @property
    def term_set(self) -> str:
        """A stable name for this list of terms: the series count it under this name."""
        canonical = "\n".join(sorted(term.strip().lower() for term in self.terms))
        return "k" + hashlib.sha1(canonical.encode()).hexdigest()[:10]

    @property
    def floor(self) -> int:
        """Mentions with the terms are counted ones."""
        return self.min_count

    def holds(self, signal: Signal, context: Context) -> str | None:
        count = dict(signal.bucket.bursts).get(self.term_set, 0)
        usual = dict(signal.burst_usual).get(self.term_set, 0.0)
        if count < self.min_count or count < self.ratio * max(usual, 0.5):
            return None
        shown = ", ".join(self.terms[:4]) + (" …" if len(self.terms) > 4 else "")
        return f"{count} mentions of {shown} vs {count_text(usual)} usual"


class ReplyPileOn(Strict):
    """Many replies to the brand's own posts, mostly negative: "our post is getting piled on"."""

    min_replies: int = Field(15, ge=1)
    min_negative_share: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def floor(self) -> int:
        """Replies are counted mentions."""
        return self.min_replies

    def holds(self, signal: Signal, context: Context) -> str | None:
        bucket = signal.bucket
        replies = bucket.brand_replies
        if replies < self.min_replies:
            return None
        share = bucket.brand_reply_negative / replies
        if share < self.min_negative_share:
            return None
        return f"{replies} replies to the brand's own posts, {share:.0%} negative"


class EmergingTerm(Strict):
    """A term the brand never had among its top terms shows up in at least `min_count`
    mentions."""

    min_count: int = Field(5, ge=1)

    @property
    def floor(self) -> int:
        """A term's mentions are counted ones."""
        return self.min_count

    def holds(self, signal: Signal, context: Context) -> str | None:
        new = [(term, n) for term, n in signal.new_terms if n >= self.min_count]
        if not new:
            return None
        shown = ", ".join(f"'{term}' ({n})" for term, n in new[:3])
        return f"new term{'s' if len(new) > 1 else ''} never seen for this brand: {shown}"


class CrossPlatform(Strict):
    """Negative mentions on at least two sources at once: the complaint jumped platforms."""

    min_count: int = Field(5, ge=1)
    min_sources: int = Field(2, ge=2)

    @property
    def floor(self) -> int:
        """Each source's negative mentions are counted ones."""
        return self.min_count * self.min_sources

    def holds(self, signal: Signal, context: Context) -> str | None:
        sources = [(s, n) for s, n in signal.bucket.negative_sources if n >= self.min_count]
        if len(sources) < self.min_sources:
            return None
        shown = ", ".join(f"{source} {n}" for source, n in sources)
        return f"negative mentions on {len(sources)} platforms at once ({shown})"


Leaf = (
    VolumeSpike
    | NegativeShare
    | NegativeSpike
    | HighReachNegative
    | KeywordBurst
    | ReplyPileOn
    | EmergingTerm
    | CrossPlatform
)
_GROUPS = ("all", "any", "min_count")  # the keys of a condition that are not a leaf


class Condition(Strict):
    """Exactly one condition, or `all` / `any` of a list of them.

    `floor` is the least count a bucket needs for the condition to hold (every leaf but a volume
    spike needs that many counted mentions, replies, posts or terms), so the rule engine need not
    evaluate it on the many quiet buckets below it.
    """

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    volume_spike: VolumeSpike | None = None
    negative_share: NegativeShare | None = None
    negative_spike: NegativeSpike | None = None
    high_reach_negative: HighReachNegative | None = None
    keyword_burst: KeywordBurst | None = None
    reply_pile_on: ReplyPileOn | None = None
    emerging_term: EmergingTerm | None = None
    cross_platform: CrossPlatform | None = None
    min_count: int | None = Field(None, ge=1)

    @field_validator("volume_spike", "negative_spike", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        # `volume_spike: high` is short for {sensitivity: high}
        return value if isinstance(value, dict) or value is None else {"sensitivity": value}

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(type(self).model_fields)
            found = ", ".join(given) or "none"
            raise ValueError(f"a condition needs exactly one of: {names} (found {found})")
        for group in (self.all, self.any):
            if group is not None and not group:
                raise ValueError("`all` and `any` need at least one condition")
        return self

    @cached_property
    def leaf(self) -> Leaf | None:
        """The one condition of a leaf; None for `all`, `any` and `min_count`."""
        values = (getattr(self, name) for name in type(self).model_fields if name not in _GROUPS)
        return next((value for value in values if value is not None), None)

    @cached_property
    def floor(self) -> int:
        if self.all is not None:
            return max(part.floor for part in self.all)
        if self.any is not None:
            return min(part.floor for part in self.any)
        if self.min_count is not None:
            return self.min_count
        return 0 if self.leaf is None else self.leaf.floor

    def holds(self, signal: Signal, context: Context) -> list[str] | None:
        """The reasons it holds, one sentence per condition, or None when it does not."""
        leaf = self.leaf
        if leaf is not None:
            reason = leaf.holds(signal, context)
            return None if reason is None else [reason]
        if self.all is not None:
            reasons: list[str] = []
            for part in self.all:
                held = part.holds(signal, context)
                if held is None:
                    return None
                reasons.extend(held)
            return reasons
        if self.any is not None:
            for part in self.any:
                held = part.holds(signal, context)
                if held is not None:
                    return held
            return None
        if self.min_count is not None:
            count = signal.bucket.count
            return (
                [f"{count} mentions (at least {self.min_count})"]
                if count >= self.min_count
                else None
            )
        return None

    def walk(self) -> Iterator[Condition]:
        """This condition and every condition nested in it."""
        yield self
        for part in (*(self.all or ()), *(self.any or ())):
            yield from part.walk()


Condition.model_rebuild()
