"""What a rule set needs counted beyond the plain series: its mention filters and its terms.

A rule whose scope filters mentions (sources, languages, reach, keywords, regex) gets series of
its own, a *view*, counting only the mentions that pass; rules with the same filter share one.
A `keyword_burst` condition's terms are counted per bucket under the name of their term set.
"""

from __future__ import annotations

from collections.abc import Sequence

from crisiswatch.config import Settings
from crisiswatch.domain import ALL_TOPICS, ScoredMention, SeriesKey
from crisiswatch.enrich.attribution import TermIndex
from crisiswatch.rules.schema import Rule, Scope


class RuleInputs:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.scopes: dict[str, Scope] = {}  # view -> a scope with that filter
        self.bursts: TermIndex[str] = TermIndex()  # term -> its term set
        for rule in rules:
            view = rule.scope.view
            if view:
                self.scopes.setdefault(view, rule.scope)
            for condition in rule.when.walk():
                burst = condition.keyword_burst
                if burst is not None:
                    for term in burst.terms:
                        self.bursts.add(term, burst.term_set)

    def views_of(self, scored: ScoredMention, tokens: Sequence[str]) -> list[str]:
        """The views a mention counts in (besides the plain series)."""
        if not self.scopes:
            return []
        return [
            view
            for view, scope in self.scopes.items()
            if (scope.brands == "all" or scored.brand in scope.brands)
            and scope.passes(scored.mention, tokens)
        ]

    def series(self, settings: Settings) -> list[SeriesKey]:
        """Every series to close each bucket: each brand's roll-up and topics, in every view."""
        keys = []
        for view in ("", *self.scopes):
            scope = self.scopes.get(view)
            for brand in settings.brands:
                if scope is not None and scope.brands != "all" and brand.id not in scope.brands:
                    continue
                keys.append(SeriesKey(brand.id, ALL_TOPICS, view))
                keys.extend(SeriesKey(brand.id, topic, view) for topic in brand.topics)
        return keys
