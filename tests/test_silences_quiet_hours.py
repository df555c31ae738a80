"""Silences and quiet hours: what mutes a page, what waits until morning, what never waits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import conftest
import pytest

from crisiswatch.cli import main
from crisiswatch.config import LiveSettings, Route, Settings
from crisiswatch.domain import Page, PageKind, Severity, Silence
from crisiswatch.notify.dispatch import Dispatcher
from crisiswatch.notify.feedback import Click, snooze_silence
from crisiswatch.notify.stages import quiet_until, silenced_by
from crisiswatch.rules.testing import Case
from crisiswatch.store import Store, StoreError

NOW = datetime(2026, 3, 3, 2, 30, tzinfo=UTC)
PageFactory = Callable[..., Page]


def silence(**matchers: str) -> Silence:
    return Silence(
        "s-1", NOW - timedelta(minutes=5), NOW + timedelta(hours=1), "me", "why", **matchers
    )


def quiet_route(min_severity: str = "critical", zone: str = "UTC") -> Route:
    hours = {"start": "22:00", "end": "07:00", "timezone": zone, "min_severity": min_severity}
    return Route.model_validate({"quiet_hours": hours})


class Recorder(conftest.Recorder):
    """A notifier that wakes people: quiet hours hold its pages."""

    name = "phone"
    pages_people = True


class TestSilences:
    def test_matchers(self, make_page: PageFactory) -> None:
        """Brand, rule and incident matchers each narrow what a silence mutes."""
        page = make_page(PageKind.OPENED, NOW)
        incident = page.incident
        assert silenced_by(page, [silence(brand=incident.brand)], NOW) is not None
        assert silenced_by(page, [silence(brand="someone-else")], NOW) is None
        assert silenced_by(page, [silence(rule=incident.rules[0])], NOW) is not None
        assert silenced_by(page, [silence(incident=incident.key)], NOW) is not None
        assert silenced_by(page, [silence(incident=incident.id)], NOW) is not None
        assert silenced_by(page, [silence(brand=incident.brand, rule="other")], NOW) is None

    def test_a_rule_silence_spares_an_incident_another_rule_drives(
        self, make_page: PageFactory
    ) -> None:
        """Silencing a noisy rule mutes its own incidents, not one that a critical rule opened
        with it (the manual's `--rule negative-turn` "noisy today")."""
        both = make_page(PageKind.OPENED, NOW, rules=("big-critical", "noisy-warning"))
        alone = make_page(PageKind.OPENED, NOW, rules=("noisy-warning",))
        assert silenced_by(both, [silence(rule="noisy-warning")], NOW) is None
        assert silenced_by(alone, [silence(rule="noisy-warning")], NOW) is not None

    def test_an_announced_incident_is_told_its_end(self, make_page: PageFactory) -> None:
        """A silence does not hide the resolution of an incident that paged (its message would
        stay firing), but does of one it muted from the start."""
        resolved = make_page(PageKind.RESOLVED, NOW)
        muted = [silence(brand=resolved.incident.brand)]
        assert silenced_by(resolved, muted, NOW, announced=True) is None
        assert silenced_by(resolved, muted, NOW, announced=False) is not None
        update = make_page(PageKind.UPDATED, NOW)
        assert silenced_by(update, muted, NOW, announced=True) is not None

    def test_only_while_in_force(self, make_page: PageFactory) -> None:
        """A silence mutes nothing before it starts or after it ends."""
        page = make_page(PageKind.OPENED, NOW)
        muted = silence(brand=page.incident.brand)
        assert silenced_by(page, [muted], NOW + timedelta(hours=2)) is None
        assert silenced_by(page, [muted], NOW - timedelta(hours=1)) is None

    def test_never_hides_an_escalation_to_critical(self, make_page: PageFactory) -> None:
        """A crisis getting critical pages through any silence."""
        page = make_page(PageKind.ESCALATED, NOW, severity=Severity.CRITICAL)
        assert silenced_by(page, [silence(brand=page.incident.brand)], NOW) is None

    def test_snooze_silences_that_incident_for_an_hour(self) -> None:
        """Slack's Snooze becomes a one-hour silence of the clicked incident."""
        made = snooze_silence(Click("snooze", "brand=kestrel@20260303T0215Z", "U1", NOW))
        assert made.incident == "brand=kestrel@20260303T0215Z"
        assert made.ends_at - made.starts_at == timedelta(hours=1)
        assert made.created_by == "slack:U1"

    def test_snooze_spares_the_next_incident_of_the_brand(self, make_page: PageFactory) -> None:
        """Snoozing one incident does not mute a new incident of the same brand, even within
        the hour (a new crisis must page)."""
        snoozed = make_page(PageKind.UPDATED, NOW)
        made = snooze_silence(Click("snooze", snoozed.incident.id, "U1", NOW))
        assert silenced_by(snoozed, [made], NOW) is made
        later = NOW + timedelta(minutes=20)
        new = make_page(PageKind.OPENED, later, id=f"{snoozed.incident.key}@20260303T0250Z")
        assert silenced_by(new, [made], later) is None


class TestQuietHours:
    def test_holds_below_min_severity_until_the_end(self, make_page: PageFactory) -> None:
        """A warning at 02:30 waits until 07:00; a critical page goes at once."""
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        critical = make_page(PageKind.OPENED, NOW, severity=Severity.CRITICAL)
        assert quiet_until(warning, quiet_route(), NOW) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
        assert quiet_until(critical, quiet_route(), NOW) is None

    def test_before_midnight_waits_for_the_next_morning(self, make_page: PageFactory) -> None:
        """At 23:00 the quiet hours end tomorrow at 07:00."""
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        late = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
        assert quiet_until(warning, quiet_route(), late) == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
        assert quiet_until(warning, quiet_route(), datetime(2026, 3, 3, 12, tzinfo=UTC)) is None

    def test_time_zone_of_the_team(self, make_page: PageFactory) -> None:
        """Quiet hours are the team's local hours: 02:30 UTC is 21:30 in New York, not quiet."""
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        assert quiet_until(warning, quiet_route(zone="America/New_York"), NOW) is None

    def test_rule_tests_supersede_a_held_page_as_the_daemon_does(
        self, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`rules test` drops a warning held until 07:00 when its incident's critical
        escalation went out at 03:00, as the dispatcher would: a held page nothing overtook
        still comes at 07:00."""
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        worse = make_page(PageKind.ESCALATED, NOW + timedelta(minutes=30))
        other = make_page(PageKind.OPENED, NOW, id="b@1", severity=Severity.WARNING)
        monkeypatch.setattr(Case, "_made", lambda *_: [warning, other, worse])
        settings = Settings(brands=[], routes={warning.incident.route: quiet_route()})
        delivered = Case("t", NOW, [], [], None, []).pages(settings, [])
        assert [(p.kind, p.incident.id, p.at.hour) for p in delivered] == [
            (PageKind.ESCALATED, worse.incident.id, 3),
            (PageKind.OPENED, "b@1", 7),
        ]

    def test_unknown_time_zone_is_a_config_error(self) -> None:
        """A misspelled zone is refused with a readable message."""
        with pytest.raises(ValueError, match="unknown time zone 'Europe/Londn'"):
            quiet_route(zone="Europe/Londn")


class TestDispatcherStages:
    async def test_silenced_page_is_not_queued(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """A silenced page never reaches the outbox or the notifier."""
        store = await Store.open(tmp_path / "s.db")
        page = make_page(PageKind.OPENED, NOW)
        await store.add_silence(silence(brand=page.incident.brand))
        phone = Recorder()
        dispatcher = Dispatcher([phone], store, clock=lambda: NOW)
        await dispatcher.dispatch(page)
        assert phone.pages == [] and dispatcher.silenced == 1
        assert await store.pending(phone.name) == 0
        await store.close()

    async def test_a_snoozed_incident_still_resolves(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """After Snooze, the incident's updates are muted but its resolution goes out, so its
        message does not stay firing with live buttons."""
        store = await Store.open(tmp_path / "s.db")
        phone = Recorder()
        dispatcher = Dispatcher([phone], store, clock=lambda: NOW)
        opened = make_page(PageKind.OPENED, NOW - timedelta(minutes=10))
        await dispatcher.dispatch(opened)
        await store.add_silence(snooze_silence(Click("snooze", opened.incident.id, "U1", NOW)))
        update = make_page(PageKind.UPDATED, NOW, changes=("now also on reddit",))
        resolved = make_page(PageKind.RESOLVED, NOW + timedelta(minutes=1))
        await dispatcher.dispatch(update)
        await dispatcher.dispatch(resolved)
        assert phone.pages == [opened, resolved] and dispatcher.silenced == 1
        await store.close()

    async def test_quiet_hours_hold_in_the_outbox_until_due(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """A held page stays queued (surviving a restart) and goes out once its time comes,
        saying until when it was held (decided at 02:30, it would otherwise read as fresh)."""
        store = await Store.open(tmp_path / "s.db")
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        phone = Recorder()
        clock = [NOW]
        routes = {warning.incident.route: quiet_route()}
        live = LiveSettings(Settings(brands=[], routes=routes))
        dispatcher = Dispatcher([phone], store, live=live, clock=lambda: clock[0])
        await dispatcher.dispatch(warning)
        assert phone.pages == [] and await store.pending(phone.name) == 1
        clock[0] = datetime(2026, 3, 3, 7, 1, tzinfo=UTC)
        await dispatcher.flush()
        held_until = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
        assert phone.pages == [replace(warning, held_until=held_until)]
        await store.close()

    async def test_quiet_hours_hold_a_page_the_outbox_cannot_take(
        self, tmp_path: Path, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a full disk the held page waits in memory until its time, while a critical page
        after it goes at once."""
        store = await Store.open(tmp_path / "s.db")

        async def full(*args: object) -> int:
            raise StoreError("state store write failed: database or disk is full")

        monkeypatch.setattr(store, "enqueue", full)
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        critical = make_page(PageKind.OPENED, NOW, id="other@1", severity=Severity.CRITICAL)
        phone, clock = Recorder(), [NOW]
        routes = {warning.incident.route: quiet_route()}
        live = LiveSettings(Settings(brands=[], routes=routes))
        dispatcher = Dispatcher([phone], store, live=live, clock=lambda: clock[0])
        await dispatcher.dispatch(warning)
        await dispatcher.dispatch(critical)
        assert phone.pages == [critical]
        clock[0] = datetime(2026, 3, 3, 7, 1, tzinfo=UTC)
        await dispatcher.flush()
        held_until = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
        assert phone.pages == [critical, replace(warning, held_until=held_until)]
        await store.close()

    @pytest.mark.usefixtures("full_disk")
    async def test_a_held_page_overtaken_in_memory_is_not_sent(
        self, store: Store, make_page: PageFactory
    ) -> None:
        """On a full disk too, a held page older than one sent since is superseded: sent at
        07:00 it would bring back a warning over the critical state (Slack's living message)."""
        warning = make_page(PageKind.OPENED, NOW, severity=Severity.WARNING)
        worse = make_page(PageKind.ESCALATED, NOW + timedelta(minutes=30))
        phone, clock = Recorder(), [NOW]
        live = LiveSettings(Settings(brands=[], routes={warning.incident.route: quiet_route()}))
        dispatcher = Dispatcher([phone], store, live=live, clock=lambda: clock[0])
        await dispatcher.dispatch(warning)
        clock[0] = worse.at
        await dispatcher.dispatch(worse)
        clock[0] = datetime(2026, 3, 3, 7, 1, tzinfo=UTC)
        await dispatcher.flush()
        assert phone.pages == [worse] and dispatcher.in_memory == 0


class TestSilenceCommand:
    def test_add_list_expire(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The CLI adds a silence to the state store, lists it, and ends it; without --config
        it warns that nothing was checked and which store holds the silence (the daemon's may
        be another: on-call would believe a page muted that still goes)."""
        monkeypatch.chdir(tmp_path)
        args = ["silence", "add", "--brand", "kestrel", "--for", "2h", "--comment", "ATM fault"]
        assert main(args) == 0
        out, err = capsys.readouterr()
        silence_id = out.split(":")[0]
        assert "without --config nothing was checked" in err
        assert "var/crisiswatch.sqlite3: the running daemon sees it only if" in err
        assert main(["silence", "list"]) == 0
        assert "brand=kestrel" in capsys.readouterr().out
        assert main(["silence", "expire", silence_id]) == 0
        assert main(["silence", "list"]) == 0
        assert "no silences in force" in capsys.readouterr().out
        assert main(["silence", "expire", silence_id]) == 1

    def test_incident_id_as_pasted_from_a_page(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The id a page shows (with the zero-width space it puts after `@`) silences that
        incident; a value that is no incident id or key, or an endless `--for`, is refused
        with a message, not a traceback."""
        monkeypatch.chdir(tmp_path)
        pasted = "brand=kestrel@\u200b20260303T0215Z"
        base = ["silence", "add", "--for", "2h", "--comment", "handled"]
        assert main([*base, "--incident", pasted]) == 0
        assert "incident=brand=kestrel@20260303T0215Z" in capsys.readouterr().out
        with pytest.raises(SystemExit) as refused:
            main([*base, "--incident", "kestrel"])
        assert refused.value.code == 2
        assert "is not an incident id or key" in capsys.readouterr().err
        endless = ["silence", "add", "--brand", "kestrel", "--for", "999999w", "--comment", "x"]
        assert main(endless) == 2
        assert "at most 366d" in capsys.readouterr().err

    def test_refuses_to_silence_everything_or_unknown_names(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No matcher, or a brand the config does not know, is an error with a suggestion."""
        assert main(["silence", "add", "--for", "1h", "--comment", "x"]) == 2
        config = str(Path(__file__).resolve().parents[1] / "config" / "crisiswatch.yaml")
        args = ["silence", "add", "--config", config, "--brand", "acmee", "--for", "1h"]
        assert main([*args, "--comment", "x"]) == 2
        assert "did you mean 'acme'?" in capsys.readouterr().err

    def test_a_rule_silence_is_added_while_the_rule_files_are_broken(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Right after an editor's bad save the daemon pages on its last good rules: on-call
        can still silence one of them (with a warning that it was not checked), not be
        refused with the editor's YAML error."""
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "crisis.yaml").write_text("rules:\n  - id: busy\n    when: {min_cont: 3}\n")
        config = tmp_path / "config.yaml"
        config.write_text(
            f"state_dir: {tmp_path / 'state'}\nrules: [{rules}]\n"
            "brands:\n  - id: acme\n    keywords: [acme]\n"
        )
        args = ["silence", "add", "--config", str(config), "--rule", "busy", "--for", "1h"]
        assert main([*args, "--comment", "editor's fix on its way"]) == 0
        out, err = capsys.readouterr()
        assert "silenced rule=busy for 1h" in out
        assert "--rule 'busy' was not checked: the rule files have 1 problem(s)" in err
        assert main(["silence", "list", "--config", str(config)]) == 0
        assert "rule=busy" in capsys.readouterr().out
