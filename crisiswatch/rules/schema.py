"""The rule language: YAML documents → typed, validated rules.

A rule file holds `rules:`, a list of rules. Each rule has an id, a scope (brands, topics), a
`when` made of conditions on a bucket's signal combined with `all` / `any`, how long it must
hold (`for`), how long it keeps firing after it stops holding (`keep_firing_for`), a severity,
a stage, a route and a summary template. Unknown keys are errors (see `rules/README.md`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from crisiswatch.config import Duration, Strict, check_identifier
from crisiswatch.detect.volume import SENSITIVITY as VOLUME_SENSITIVITY
from crisiswatch.domain import ALL_TOPICS, Severity, Signal, Stage
from crisiswatch.durations import format_duration

Sensitivity = Literal["low", "balanced", "high"]

NEGATIVE_SENSITIVITY: dict[str, float] = {"low": 0.9995, "balanced": 0.995, "high": 0.98}

_PLACEHOLDER = re.compile(r"\{(\w{1,40})\}")
PLACEHOLDERS = frozenset(
    [
        "brand",
        "topic",
        "series",
        "count",
        "expected",
        "negative_pct",
        "usual_negative_pct",
        "authors",
        "reach",
        "rise",
        "window",
    ]
)


def _count(expected: float) -> str:
    """An expected count as people read it: 0.4, 3.2, 57."""
    return f"{expected:.1f}" if expected < 10 else f"{expected:.0f}"


def _threshold(value: Sensitivity | float, presets: dict[str, float]) -> float:
    return presets[value] if isinstance(value, str) else float(value)


class VolumeSpike(Strict):
    sensitivity: Sensitivity | float = "balanced"

    @field_validator("sensitivity")
    @classmethod
    def _in_range(cls, value: Sensitivity | float) -> Sensitivity | float:
        if isinstance(value, float) and not 0.0 < value < 1.0:
            raise ValueError("an explicit score must be between 0 and 1")
        return value

    def holds(self, signal: Signal) -> str | None:
        if signal.volume_score < _threshold(self.sensitivity, VOLUME_SENSITIVITY):
            return None
        return (
            f"volume {signal.bucket.count} vs {_count(signal.volume_expected)} expected "
            f"(band up to {_count(signal.volume_upper)}), score {signal.volume_score:.3f}"
        )


class NegativeShare(Strict):
    above: float = Field(ge=0.0, le=1.0)
    min_count: int = Field(10, ge=1)

    def holds(self, signal: Signal) -> str | None:
        bucket = signal.bucket
        if bucket.count < self.min_count or bucket.negative_share < self.above:
            return None
        return (
            f"negative share {bucket.negative_share:.0%} (at least {self.above:.0%}) "
            f"of {bucket.count} mentions"
        )


class NegativeSpike(Strict):
    sensitivity: Sensitivity | float = "balanced"
    min_count: int = Field(10, ge=1)

    def holds(self, signal: Signal) -> str | None:
        bucket = signal.bucket
        threshold = _threshold(self.sensitivity, NEGATIVE_SENSITIVITY)
        if bucket.count < self.min_count or signal.negative_score < threshold:
            return None
        return (
            f"negative share {bucket.negative_share:.0%} vs usual "
            f"{signal.negative_expected:.0%} ({bucket.negative_count} of {bucket.count})"
        )


class HighReachNegative(Strict):
    min_followers: int = Field(ge=1)
    min_negative: float = Field(0.7, ge=0.5, le=1.0)

    def holds(self, signal: Signal) -> str | None:
        for scored in signal.bucket.samples:
            mention = scored.mention
            if mention.author_followers >= self.min_followers and (
                scored.negative >= self.min_negative
            ):
                who = mention.author or "an author"
                return f"negative post by {who} with {mention.author_followers:,} followers"
        return None


class Condition(Strict):
    """Exactly one condition, or `all` / `any` of a list of them."""

    all: list[Condition] | None = None
    any: list[Condition] | None = None
    volume_spike: VolumeSpike | None = None
    negative_share: NegativeShare | None = None
    negative_spike: NegativeSpike | None = None
    high_reach_negative: HighReachNegative | None = None
    min_count: int | None = Field(None, ge=1)

    @field_validator("volume_spike", "negative_spike", mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        # `volume_spike: high` and `negative_spike: 0.99` are short for {sensitivity: ...}
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

    def holds(self, signal: Signal) -> list[str] | None:
        """The reasons it holds, one sentence per condition, or None when it does not."""
        if self.all is not None:
            reasons: list[str] = []
            for part in self.all:
                held = part.holds(signal)
                if held is None:
                    return None
                reasons.extend(held)
            return reasons
        if self.any is not None:
            for part in self.any:
                held = part.holds(signal)
                if held is not None:
                    return held
            return None
        return self._leaf(signal)

    def _leaf(self, signal: Signal) -> list[str] | None:
        if self.min_count is not None:
            count = signal.bucket.count
            return (
                [f"{count} mentions (floor {self.min_count})"] if count >= self.min_count else None
            )
        leaf = (
            self.volume_spike
            or self.negative_share
            or self.negative_spike
            or self.high_reach_negative
        )
        assert leaf is not None  # _exactly_one guarantees a condition
        reason = leaf.holds(signal)
        return None if reason is None else [reason]


class Scope(Strict):
    brands: list[str] | Literal["all"] = "all"
    topics: list[str] | Literal["all"] = "all"  # "*" names a brand's roll-up of every topic

    def covers(self, signal: Signal) -> bool:
        series = signal.series
        if self.brands != "all" and series.brand not in self.brands:
            return False
        return self.topics == "all" or series.topic in self.topics


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
        unknown = sorted(set(_PLACEHOLDER.findall(summary)) - PLACEHOLDERS)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} in summary; "
                f"known: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}"
            )
        return summary

    @property
    def severity_level(self) -> Severity:
        return Severity[self.severity.upper()]

    @property
    def stage_level(self) -> Stage:
        return Stage[self.stage.upper()]

    def render_summary(self, signal: Signal) -> str:
        bucket = signal.bucket
        values = {
            "brand": bucket.series.brand,
            "topic": "all topics" if bucket.series.topic == ALL_TOPICS else bucket.series.topic,
            "series": str(bucket.series),
            "count": str(bucket.count),
            "expected": _count(signal.volume_expected),
            "negative_pct": f"{bucket.negative_share:.0%}",
            "usual_negative_pct": f"{signal.negative_expected:.0%}",
            "authors": str(bucket.unique_authors),
            "reach": f"{bucket.reach:,}",
            "rise": f"×{bucket.count / max(signal.previous_count, 1):.1f}",
            "window": format_duration(bucket.end - bucket.start),
        }
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.summary)


class RuleFile(Strict):
    rules: list[Rule]


Condition.model_rebuild()
