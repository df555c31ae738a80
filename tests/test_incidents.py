"""Incidents: one per crisis, escalating when it worsens or spreads, resolving when quiet."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from crisiswatch.config import Route
from crisiswatch.domain import (
    Alert,
    Bucket,
    IncidentStatus,
    PageKind,
    SeriesKey,
    Severity,
    Signal,
    Stage,
)
from crisiswatch.incidents import IncidentManager

T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)


def alert(
    at: datetime,
    *,
    rule: str = "angry-surge",
    brand: str = "acme",
    topic: str = "*",
    severity: Severity = Severity.WARNING,
    stage: Stage = Stage.SPARK,
    sources: tuple[tuple[str, int], ...] = (("x", 40),),
    route: str = "default",
) -> Alert:
    count = sum(n for _, n in sources)
    bucket = Bucket(
        SeriesKey(brand, topic), at - STEP, at, count, count, count // 2, count, 0, sources, (), ()
    )
    signal = Signal(bucket, 0.99, 5.0, 12.0, 0.99, 0.2, 5)
    return Alert(rule, severity, stage, signal, f"{brand} surge", ("why",), route)


def manager(**keep: timedelta) -> IncidentManager:
    return IncidentManager(keep or {"angry-surge": timedelta(hours=1)})


class TestIncidentManager:
    def test_first_alert_opens_and_repeats_stay_silent(self) -> None:
        """One page opens the incident; the same alert again pages nothing."""
        incidents = manager()
        (page,) = incidents.update([alert(T0)], T0)
        assert page.kind is PageKind.OPENED
        assert page.incident.started_at == T0 - STEP
        assert incidents.update([alert(T0 + STEP)], T0 + STEP) == []

    def test_alerts_of_one_brand_share_an_incident(self) -> None:
        """Two rules and two topics of one brand make one incident; another brand its own."""
        incidents = IncidentManager({"a": timedelta(hours=1), "b": timedelta(hours=1)})
        pages = incidents.update(
            [
                alert(T0, rule="a"),
                alert(T0, rule="b", topic="cards"),
                alert(T0, rule="a", brand="other"),
            ],
            T0,
        )
        assert [p.incident.brand for p in pages] == ["acme", "other"]
        assert pages[0].incident.rules == ("a", "b")
        assert pages[0].incident.topics == ("cards",)

    def test_severity_rise_escalates_with_the_change(self) -> None:
        """A worse alert edits the incident and says what changed."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        (page,) = incidents.update([alert(T0 + STEP, severity=Severity.CRITICAL)], T0 + STEP)
        assert page.kind is PageKind.ESCALATED
        assert page.changes == ("severity warning → critical",)

    def test_every_page_shows_the_latest_alerting_bucket(self) -> None:
        """An update (spreading to reddit), held back pages and reminders carry the numbers of
        the bucket that alerted last, not of the one that opened or last escalated it (an
        hour-old "40 mentions" under a page sent now)."""
        incidents = manager()
        incidents.update([alert(T0, severity=Severity.CRITICAL)], T0)
        later = T0 + STEP
        (page,) = incidents.update([alert(later, sources=(("x", 70), ("reddit", 30)))], later)
        assert page.kind is PageKind.UPDATED and page.changes == ("now also on reddit",)
        assert page.incident.latest.bucket.end == later and page.incident.latest.bucket.count == 100
        assert page.incident.severity is Severity.CRITICAL and page.incident.peak_count == 100

    def test_a_brand_wide_incident_keeps_all_topics_when_a_topic_joins(self) -> None:
        """Opened by all the brand's mentions, then a topic alerting too: about all topics and
        that one; an incident of topics alone is about those."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        (page,) = incidents.update([alert(T0 + STEP, topic="cards")], T0 + STEP)
        assert page.changes == ("now also about cards",)
        assert page.incident.scope == "all topics, cards"
        (other,) = manager().update([alert(T0, topic="cards")], T0)
        assert other.incident.scope == "cards"

    def test_resolved_by_a_person_while_firing_it_does_not_reopen_until_quiet(self) -> None:
        """Resolve while the rules still alert: the same alerts five minutes on do not open a
        new incident (which had paged everyone again, lost the acknowledgement and reset
        "since"); once they have been quiet for `keep_firing_for`, a new alert opens one."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        (resolved,) = incidents.resolve_now("brand=acme", T0 + STEP, "resolved by U1")
        assert resolved.kind is PageKind.RESOLVED
        for n in range(2, 6):
            assert incidents.update([alert(T0 + n * STEP)], T0 + n * STEP) == []
        quiet = T0 + 5 * STEP + timedelta(hours=1)
        assert incidents.update([], quiet) == []
        (page,) = incidents.update([alert(quiet + STEP)], quiet + STEP)
        assert page.kind is PageKind.OPENED and page.incident.started_at == quiet

    def test_resolved_by_a_person_a_worse_alert_opens_a_new_incident(self) -> None:
        """What was resolved was a warning: a critical alert of the same brand still pages."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        incidents.resolve_now("brand=acme", T0 + STEP, "resolved by U1")
        assert incidents.update([alert(T0 + 2 * STEP)], T0 + 2 * STEP) == []
        later = T0 + 3 * STEP
        (page,) = incidents.update([alert(later, severity=Severity.CRITICAL)], later)
        assert page.kind is PageKind.OPENED and page.incident.severity is Severity.CRITICAL

    def test_resolved_by_a_person_another_rule_opens_a_new_incident(self) -> None:
        """Only the resolved incident's own rules are taken as its tail: another rule of the
        brand (an outage on the app, where a complaint surge was resolved) pages at once."""
        incidents = IncidentManager({"a": timedelta(hours=1), "b": timedelta(hours=1)})
        incidents.update([alert(T0, rule="a")], T0)
        incidents.resolve_now("brand=acme", T0 + STEP, "resolved by U1")
        assert incidents.update([alert(T0 + 2 * STEP, rule="a")], T0 + 2 * STEP) == []
        later = T0 + 3 * STEP
        (page,) = incidents.update([alert(later, rule="b", topic="app")], later)
        assert page.kind is PageKind.OPENED and page.incident.rules == ("b",)

    def test_an_incident_from_an_older_checkpoint_restores(self) -> None:
        """An incident pickled before `brand_wide` or `totals` existed restores with them at
        their defaults (restored field by field, it had no such attribute, and every tick and
        checkpoint failed)."""
        (page,) = manager().update([alert(T0)], T0)
        state = page.incident.__getstate__()
        older, oldest = (type(page.incident).__new__(type(page.incident)) for _ in range(2))
        older.__setstate__(state[:-1])
        assert older.totals is None and older.brand_wide is page.incident.brand_wide is True
        oldest.__setstate__(state[:-2])
        assert oldest.brand_wide is False and oldest.key == page.incident.key
        assert pickle.loads(pickle.dumps(page.incident)) == page.incident

    def test_a_manager_from_an_older_checkpoint_restores(self) -> None:
        """A manager pickled before incidents resolved by hand were remembered restores with
        none, and works."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        state = {k: v for k, v in pickle.loads(pickle.dumps(incidents)).__dict__.items()
                 if k != "_settled"}  # fmt: skip
        restored = IncidentManager.__new__(IncidentManager)
        restored.__setstate__(state)
        assert restored.resolve_now("brand=acme", T0 + STEP, "resolved by U1")
        odd = IncidentManager.__new__(IncidentManager)  # an entry of another shape is let go
        odd.__setstate__({**state, "_settled": {"brand=beta": ("warning", T0)}})
        assert odd.update([alert(T0 + STEP, brand="beta")], T0 + STEP)

    def test_a_worse_rule_brings_its_route(self) -> None:
        """A critical rule joining a warning incident moves the incident to its route (its
        channel, its people), and a later warning of the first rule does not move it back."""
        incidents = IncidentManager({"busy": timedelta(hours=1), "very-busy": timedelta(hours=1)})
        (opened,) = incidents.update([alert(T0, rule="busy")], T0)
        assert opened.incident.route == "default"
        worse = alert(T0 + STEP, rule="very-busy", severity=Severity.CRITICAL, route="exec")
        (page,) = incidents.update([worse], T0 + STEP)
        assert page.kind is PageKind.ESCALATED and page.incident.route == "exec"
        assert "route default → exec" in page.changes
        incidents.update([alert(T0 + 2 * STEP, rule="busy")], T0 + 2 * STEP)
        assert incidents.open["brand=acme"].route == "exec"

    def test_new_source_is_an_update(self) -> None:
        """Spreading to a second platform is news; a stray post from it is not."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        stray = (("x", 40), ("reddit", 2))
        assert incidents.update([alert(T0 + STEP, sources=stray)], T0 + STEP) == []
        spread = (("x", 40), ("reddit", 20))
        (page,) = incidents.update([alert(T0 + 2 * STEP, sources=spread)], T0 + 2 * STEP)
        assert "now also on reddit" in page.changes

    def test_sustained_and_spreading_becomes_fire(self) -> None:
        """Alerting three buckets makes a flame; on two sources, a fire."""
        incidents = manager()
        both = (("x", 40), ("reddit", 20))
        stages = []
        for i in range(3):
            for page in incidents.update([alert(T0 + i * STEP, sources=both)], T0 + i * STEP):
                stages.append(page.incident.stage)
        assert stages[0] is Stage.SPARK and stages[-1] is Stage.FIRE

    def test_resolves_after_keep_firing_for_of_quiet(self) -> None:
        """No page while within keep_firing_for; a resolution once it has passed."""
        incidents = manager(**{"angry-surge": timedelta(minutes=30)})
        incidents.update([alert(T0)], T0)
        assert incidents.update([], T0 + timedelta(minutes=25)) == []
        (page,) = incidents.update([], T0 + timedelta(minutes=30))
        assert page.kind is PageKind.RESOLVED
        assert page.incident.status is IncidentStatus.RESOLVED
        assert page.incident.resolved_at == T0 + timedelta(minutes=30)
        assert incidents.open == {}

    def test_flapping_within_keep_firing_for_stays_one_incident(self) -> None:
        """An alert that stops and starts again within the window does not re-page."""
        incidents = manager()
        incidents.update([alert(T0)], T0)
        assert incidents.update([], T0 + STEP) == []
        assert incidents.update([alert(T0 + 2 * STEP)], T0 + 2 * STEP) == []

    def test_after_resolution_a_new_surge_opens_a_new_incident(self) -> None:
        """A later crisis is a new incident with its own id."""
        incidents = manager()
        (first,) = incidents.update([alert(T0)], T0)
        incidents.update([], T0 + timedelta(hours=1))
        later = T0 + timedelta(hours=3)
        (second,) = incidents.update([alert(later)], later)
        assert second.kind is PageKind.OPENED
        assert second.incident.id != first.incident.id

    def test_group_by_rule_splits_incidents(self) -> None:
        """Grouping by brand and rule gives each rule its own incident."""
        incidents = IncidentManager({}, group_by=("brand", "rule"))
        pages = incidents.update([alert(T0, rule="a"), alert(T0, rule="b")], T0)
        assert [p.incident.key for p in pages] == ["brand=acme,rule=a", "brand=acme,rule=b"]


class TestPacing:
    def paced(self, **route: str) -> IncidentManager:
        return IncidentManager(
            {"angry-surge": timedelta(minutes=30)}, routes={"default": Route.model_validate(route)}
        )

    def test_group_wait_holds_the_first_page_and_gathers(self) -> None:
        """The first page waits `group_wait`, then shows everything that fired meanwhile."""
        incidents = self.paced(group_wait="10m")
        assert incidents.update([alert(T0)], T0) == []
        spread = (("x", 40), ("reddit", 20))
        assert incidents.update([alert(T0 + STEP, sources=spread)], T0 + STEP) == []
        (page,) = incidents.update([], T0 + 2 * STEP)
        assert page.kind is PageKind.OPENED and page.incident.sources == ("reddit", "x")

    def test_a_blip_within_group_wait_never_pages(self) -> None:
        """An incident that resolves before its first page is due is never announced."""
        incidents = self.paced(group_wait="1h")
        incidents.update([alert(T0)], T0)
        assert incidents.update([], T0 + timedelta(minutes=30)) == []
        assert incidents.open == {}
        assert incidents.update([], T0 + timedelta(hours=2)) == []

    def test_group_interval_spaces_updates_but_not_escalations(self) -> None:
        """Updates within `group_interval` are held and merged; an escalation goes at once."""
        incidents = self.paced(group_interval="30m")
        incidents.update([alert(T0)], T0)
        spread = (("x", 40), ("reddit", 20))
        assert incidents.update([alert(T0 + STEP, sources=spread)], T0 + STEP) == []
        (page,) = incidents.update(
            [alert(T0 + 2 * STEP, severity=Severity.CRITICAL)], T0 + 2 * STEP
        )
        assert page.kind is PageKind.ESCALATED
        assert page.changes[:2] == ("now also on reddit", "severity warning → critical")

    def test_held_updates_go_out_when_the_interval_has_passed(self) -> None:
        """A held update is released by a later bucket once `group_interval` has passed."""
        incidents = self.paced(group_interval="15m")
        incidents.update([alert(T0, stage=Stage.FLAME)], T0)
        for step in (1, 2):
            at = T0 + step * STEP
            assert incidents.update([alert(at, stage=Stage.FLAME, topic="cards")], at) == []
        at = T0 + 3 * STEP
        (page,) = incidents.update([alert(at, stage=Stage.FLAME, topic="cards")], at)
        assert page.kind is PageKind.UPDATED and page.changes == ("now also about cards",)

    def test_reminders_only_while_rules_still_alert(self) -> None:
        """`repeat_interval` reminds of an incident still firing, not of one that has stopped
        alerting and only waits out its `keep_firing_for` (30 minutes here)."""
        incidents = self.paced(repeat_interval="5m")
        kinds = []
        for step in range(9):  # alerting in the first two buckets, then quiet
            at = T0 + step * STEP
            kinds += [(step, p.kind) for p in incidents.update([alert(at)] if step < 2 else [], at)]
        assert kinds == [(0, PageKind.OPENED), (1, PageKind.REMINDER), (7, PageKind.RESOLVED)]
