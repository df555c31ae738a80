"""Signals → alerts: each rule's conditions on each closed bucket, with `for` tracked per series.

A rule that raises while evaluating is skipped for that signal and logged; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from crisiswatch.config import PlannedEvent
from crisiswatch.domain import Alert, SeriesKey, Signal
from crisiswatch.rules.conditions import Context
from crisiswatch.rules.schema import Rule

log = structlog.get_logger(__name__)
_NO_EVENT = Context()


class RuleEngine:
    """Evaluates a rule set; remembers since when each (rule, series) has held, for `for`."""

    def __init__(self, rules: Sequence[Rule], calendar: Sequence[PlannedEvent] = ()) -> None:
        self.rules = list(rules)
        self.calendar = list(calendar)
        self.holding_since: dict[tuple[str, SeriesKey], datetime] = {}  # (rule, series) → since
        self._covering: dict[SeriesKey, list[Rule]] = {}  # the rules whose scope takes a series

    def replaced(self, rules: Sequence[Rule], calendar: Sequence[PlannedEvent]) -> RuleEngine:
        """An engine for a new rule set that remembers how long unchanged rules have held."""
        engine = RuleEngine(rules, calendar)
        before = {rule.id: rule.model_dump() for rule in self.rules}
        unchanged = {rule.id for rule in rules if before.get(rule.id) == rule.model_dump()}
        engine.holding_since = {
            key: since for key, since in self.holding_since.items() if key[0] in unchanged
        }
        return engine

    def _context(self, signal: Signal) -> Context:
        if not self.calendar:
            return _NO_EVENT
        brand, at = signal.series.brand, signal.bucket.start
        factor = max((event.factor(brand, at) for event in self.calendar), default=1.0)
        return Context(expected_volume_factor=factor)

    def evaluate(self, signal: Signal) -> list[Alert]:
        alerts = []
        context = self._context(signal)
        count, series = signal.bucket.count, signal.series
        rules = self._covering.get(series)
        if rules is None:
            rules = self._covering[series] = [
                rule for rule in self.rules if rule.scope.covers(series)
            ]
        for rule in rules:
            if count < rule.when.floor:
                reasons = None
            else:
                try:
                    reasons = rule.when.holds(signal, context)
                except Exception:
                    log.exception("rule.failed", rule=rule.id, series=str(series))
                    continue
            if reasons is None:
                if self.holding_since:
                    self.holding_since.pop((rule.id, series), None)
                continue
            key = (rule.id, series)
            since = self.holding_since.setdefault(key, signal.bucket.start)
            if signal.at - since < rule.for_:
                continue
            alerts.append(
                Alert(
                    rule_id=rule.id,
                    severity=rule.severity_level,
                    stage=rule.stage_level,
                    signal=signal,
                    summary=rule.render_summary(signal),
                    reasons=tuple(reasons),
                    route=rule.route,
                )
            )
        return alerts
