"""What a rule set needs counted beyond the plain series: its mention filters and its terms.

A rule whose scope filters mentions (sources, languages, reach, keywords, regex) gets series of
its own, a *view*, counting only the mentions that pass; rules with the same filter share one,
which counts the mentions of every brand one of them covers.
A `keyword_burst` condition's terms are counted per bucket under the name of their term set.
Terms new to a brand are looked for only while an `emerging_term` condition asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crisiswatch.config import Settings
from crisiswatch.domain import ALL_TOPICS, ScoredMention, SeriesKey
from crisiswatch.enrich.attribution import TermIndex
from crisiswatch.rules.schema import Rule, Scope


@dataclass(slots=True)
class _View:
    """A mention filter and the brands it counts for."""

    scope: Scope  # the first rule's scope with this filter (the filter is the same for all)
    brands: set[str] | None  # every brand a rule with this filter covers; None: every brand

    def counts(self, brand: str) -> bool:
        return self.brands is None or brand in self.brands

    def add(self, scope: Scope) -> None:
        """A rule with this filter: its brands are counted too."""
        if self.brands is not None:
            self.brands = None if scope.brands == "all" else self.brands | set(scope.brands)


class RuleInputs:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.views: dict[str, _View] = {}
        self.bursts: TermIndex[str] = TermIndex()  # term -> its term set
        self.emerging_terms = False  # whether a rule asks for terms new to a brand
        for rule in rules:
            if rule.scope.view:
                self.views.setdefault(rule.scope.view, _View(rule.scope, set())).add(rule.scope)
            for condition in rule.when.walk():
                self.emerging_terms |= condition.emerging_term is not None
                burst = condition.keyword_burst
                if burst is not None:
                    for term in burst.terms:
                        self.bursts.add(term, burst.term_set)

    def views_of(self, scored: ScoredMention, tokens: Sequence[str]) -> list[str]:
        """The views a mention counts in (besides the plain series)."""
        if not self.views:
            return []
        return [
            name
            for name, view in self.views.items()
            if view.counts(scored.brand) and view.scope.passes(scored.mention, tokens)
        ]

    def series(self, settings: Settings) -> list[SeriesKey]:
        """Every series to close each bucket: each brand's roll-up and topics, in every view."""
        keys = []
        for name in ("", *self.views):
            view = self.views.get(name)
            for brand in settings.brands:
                if view is not None and not view.counts(brand.id):
                    continue
                keys.append(SeriesKey(brand.id, ALL_TOPICS, name))
                keys.extend(SeriesKey(brand.id, topic, name) for topic in brand.topics)
        return keys
