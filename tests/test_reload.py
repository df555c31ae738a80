"""Hot reload: a checked config and rule set swaps in whole; a broken one never does."""

from __future__ import annotations

import asyncio
import io
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import capture_all_logs
from daemon_process import reap, start, wait_for
from fake_slack import TOKEN, FakeSlack
from structlog.testing import capture_logs

from crisiswatch import daemon as daemon_module
from crisiswatch.config import LiveSettings, load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Bucket, Mention, Page, SeriesKey, Signal
from crisiswatch.notify.console import ConsoleNotifier
from crisiswatch.notify.slack_runtime import slack_running
from crisiswatch.ops.systemd import SdNotify
from crisiswatch.pipeline import Pipeline
from crisiswatch.reload import Deployment, Fingerprint, Watcher
from crisiswatch.rules.engine import RuleEngine
from crisiswatch.rules.loader import load_rules
from crisiswatch.rules.schema import Rule
from crisiswatch.store import Store

T0 = datetime(2026, 3, 2, tzinfo=UTC)
RULE = "rules:\n  - id: {id}\n    when: {{min_count: {n}}}\n    keep_firing_for: 1h\n"


class Scorer:
    def negative_one(self, text: str) -> float:
        return 0.1


class Ops:
    """A notifier with an ops channel, recording both pages and notices."""

    name = "ops"

    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.notices: list[str] = []

    async def send(self, page: Page) -> None:
        self.pages.append(page)

    async def notice(self, text: str) -> None:
        self.notices.append(text)


def deployment(tmp_path: Path, rule_id: str = "busy", n: int = 3) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "main.yaml").write_text(RULE.format(id=rule_id, n=n))
    (tmp_path / "empty.jsonl").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        "rules: [rules]\nbrands:\n  - id: acme\n    keywords: [acme]\n"
        "sources: {replay: {path: empty.jsonl}}\n"
    )
    return config


def daemon_for(config: Path, store: Store, ops: Ops, watch_seconds: float = 0) -> Daemon:
    settings = load_settings(config)
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), Scorer())
    return Daemon(
        pipeline,
        [],
        [ops],
        store,
        queue_size=10,
        config=config,
        watch_seconds=watch_seconds,
    )


class TestReload:
    async def test_valid_rules_swap_in_and_open_incidents_carry_over(self, tmp_path: Path) -> None:
        """A reload keeps learned state and open incidents; new rules apply from then on."""
        config = deployment(tmp_path)
        ops = Ops()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops)
        pipeline = daemon.pipeline
        for n in range(5):
            pipeline.feed(Mention(f"m{n}", "x", T0 + timedelta(minutes=1), "acme"))
        pipeline.feed(Mention("late", "x", T0 + timedelta(minutes=9), "acme"))
        assert list(pipeline.incidents.open) == ["brand=acme"]
        detector = pipeline.detector
        (tmp_path / "rules" / "extra.yaml").write_text(RULE.format(id="huge", n=1000))
        assert await daemon.reload() is True
        assert {r.id for r in pipeline.engine.rules} == {"busy", "huge"}
        assert pipeline.detector is detector
        assert list(pipeline.incidents.open) == ["brand=acme"]
        assert set(pipeline.incidents.keep_firing_for) == {"busy", "huge"}
        await store.close()

    async def test_broken_rules_keep_the_running_ones_and_tell_ops(self, tmp_path: Path) -> None:
        """Invalid rules are refused whole, with every problem sent to the ops channel."""
        config = deployment(tmp_path)
        ops = Ops()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops)
        (tmp_path / "rules" / "main.yaml").write_text(
            "rules:\n  - id: busy\n    when: {min_cont: 3}\n    for: soon\n"
        )
        assert await daemon.reload() is False
        assert [r.id for r in daemon.pipeline.engine.rules] == ["busy"]
        (notice,) = ops.notices
        assert "kept its running rules" in notice and "unknown key 'min_cont'" in notice
        assert "2 problem(s)" in notice and "not a duration" in notice
        await store.close()

    async def test_an_emptied_rule_folder_is_refused(self, tmp_path: Path) -> None:
        """A deploy that empties the folder before copying the new files (or a rename to
        `.YAML`, which still counts) must not swap in no rules at all: nothing would page."""
        config = deployment(tmp_path)
        ops = Ops()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops)
        rule_file = tmp_path / "rules" / "main.yaml"
        rule_file.rename(tmp_path / "main.yaml.bak")
        assert await daemon.reload() is False
        assert [r.id for r in daemon.pipeline.engine.rules] == ["busy"]
        (notice,) = ops.notices
        assert "no rule files (*.yaml or *.yml) here, nor in any other rules path" in notice
        (tmp_path / "main.yaml.bak").rename(tmp_path / "rules" / "MAIN.YAML")
        (tmp_path / "rules" / "MAIN.YAML").write_text(RULE.format(id="renamed", n=3))
        assert await daemon.reload() is True
        assert [r.id for r in daemon.pipeline.engine.rules] == ["renamed"]
        await store.close()

    async def test_a_changed_rule_file_is_reloaded_by_itself(self, tmp_path: Path) -> None:
        """The watcher notices an edited rule file and reloads without a signal, logging
        which file changed."""
        config = deployment(tmp_path)
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, Ops(), watch_seconds=0.02)
        with capture_all_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await asyncio.sleep(0.1)
            (tmp_path / "rules" / "main.yaml").write_text(RULE.format(id="renamed", n=7))
            await until(lambda: bool(daemon.reloads), seconds=4.0)
            daemon.stopping.set()
            await run
        await store.close()
        assert daemon.reloads == 1
        assert [r.id for r in daemon.pipeline.engine.rules] == ["renamed"]
        changed = [e["files"] for e in logs if e["event"] == "config.changed"]
        assert changed == [[str(tmp_path / "rules" / "main.yaml")]]


class RecordingSystemd(SdNotify):
    """Keeps the first field of each sd_notify message instead of sending it."""

    def __init__(self) -> None:
        super().__init__("")
        self.sent: list[str] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields[0])
        return True


async def until(check: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


class TestReloadNeverDies:
    async def test_an_unexpected_error_keeps_the_rules_tells_ops_and_says_ready(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reload that fails other than with problems in the files (a rule folder removed
        while it is read) keeps the running rules, tells ops, and systemd hears READY=1 after
        RELOADING=1; the next reload works."""
        config = deployment(tmp_path)
        ops, systemd = Ops(), RecordingSystemd()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops)
        daemon.systemd = systemd

        def vanished(path: Path) -> Deployment:
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "rules/team"))

        monkeypatch.setattr(daemon_module, "load_deployment", vanished)
        with capture_logs() as logs:
            assert await daemon.reload() is False
        monkeypatch.undo()
        assert [r.id for r in daemon.pipeline.engine.rules] == ["busy"]
        assert systemd.sent == ["RELOADING=1", "READY=1"]
        (notice,) = ops.notices
        assert "kept its running rules" in notice and "FileNotFoundError" in notice
        (failed,) = [e for e in logs if e["event"] == "config.reload_failed"]
        assert failed["log_level"] == "error" and failed["exc_info"]
        (tmp_path / "rules" / "main.yaml").write_text(RULE.format(id="renamed", n=7))
        assert await daemon.reload() is True
        assert [r.id for r in daemon.pipeline.engine.rules] == ["renamed"]
        await store.close()

    async def test_the_watcher_outlives_failed_looks(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Looks at the files that fail (rglob racing a deploy's rm -rf) do not end the
        watcher: a lasting failure is told to ops once, and changes still reload."""
        config = deployment(tmp_path)
        ops = Ops()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops, watch_seconds=0.01)
        look = Watcher.fingerprint
        failing = [0]

        def racing(watcher: Watcher) -> Fingerprint:
            if failing[0]:
                failing[0] -= 1
                raise FileNotFoundError(2, "No such file or directory", "rules/team")
            return look(watcher)

        monkeypatch.setattr(Watcher, "fingerprint", racing)
        with capture_all_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await asyncio.sleep(0.05)
            failing[0] = 4
            await until(lambda: not failing[0])
            (tmp_path / "rules" / "main.yaml").write_text(RULE.format(id="renamed", n=7))
            await until(lambda: daemon.reloads == 1)
            daemon.stopping.set()
            await run
        await store.close()
        assert [r.id for r in daemon.pipeline.engine.rules] == ["renamed"]
        events = [e["event"] for e in logs if e["event"].startswith("config.watch")]
        assert events == ["config.watch_failed", "config.watch_failing", "config.watch_recovered"]
        (notice,) = ops.notices
        assert "cannot watch its config and rules" in notice and "SIGHUP" in notice

    async def test_a_helper_task_that_fails_is_started_again(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A long-running task that ends with an error (here the reloader, by a bug) is logged
        as critical, told to ops and started again, so later reloads still apply."""
        config = deployment(tmp_path)
        ops = Ops()
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, ops)
        reload = daemon.reload
        bugs = [RuntimeError("a bug")]

        async def buggy() -> bool:
            if bugs:
                raise bugs.pop()
            return await reload()

        monkeypatch.setattr(daemon, "reload", buggy)
        with capture_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await asyncio.sleep(0.05)
            daemon.reload_wanted.set()
            await until(lambda: bool(ops.notices))
            (tmp_path / "rules" / "main.yaml").write_text(RULE.format(id="renamed", n=7))
            daemon.reload_wanted.set()
            await until(lambda: daemon.reloads == 1)
            daemon.stopping.set()
            await run
        await store.close()
        (failed,) = [e for e in logs if e["event"] == "daemon.task_failed"]
        assert failed["task"] == "reload" and failed["log_level"] == "critical"
        assert "reload task failed (RuntimeError: a bug)" in ops.notices[0]
        assert [r.id for r in daemon.pipeline.engine.rules] == ["renamed"]


class TestEngineCarryOver:
    def test_for_keeps_counting_for_unchanged_rules_only(self) -> None:
        """An unchanged rule's `for` clock survives a reload; an edited rule's restarts."""
        step = timedelta(minutes=5)

        def rule(rule_id: str, n: int) -> Rule:
            return Rule.model_validate({"id": rule_id, "when": {"min_count": n}, "for": "10m"})

        def signal(at: datetime) -> Signal:
            bucket = Bucket(SeriesKey("acme"), at, at + step, 9, 9, 0, 9, 0, (), (), ())
            return Signal(bucket, 0.0, 1.0, 2.0, 0.0, 0.2, 9)

        engine = RuleEngine([rule("same", 1), rule("edited", 1)])
        assert engine.evaluate(signal(T0)) == []
        engine = engine.replaced([rule("same", 1), rule("edited", 2)], [])
        assert [a.rule_id for a in engine.evaluate(signal(T0 + step))] == ["same"]


class TestSighup:
    def test_sighup_with_broken_rules_keeps_the_daemon_running(self, tmp_path: Path) -> None:
        """SIGHUP reloads; a broken rule set is logged and the daemon carries on."""
        config = deployment(tmp_path)
        process = start(config)
        try:
            wait_for(process, b"daemon.started")
            (tmp_path / "rules" / "main.yaml").write_text("rules: [unclosed\n")
            process.send_signal(signal.SIGHUP)
            assert b"invalid YAML" in wait_for(process, b"config.reload_failed")
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
        finally:
            reap(process)
        assert process.returncode == 0


SLACK_CONFIG = """rules: [rules]
brands:
  - id: acme
    keywords: [acme]
sources: {{replay: {{path: empty.jsonl}}}}
{extra}routes:
  default:
    channel: "{channel}"
    escalate_after: {escalate_after}
    escalate_to: [{on_call}]
notify:
  console: true
  slack:
    enabled: true
    base_url: "{base_url}"
    interactivity: none
    ops_channel: "{ops}"
    digest_at: "{digest_at}"
"""


class Learner:
    def learn_one(self, text: str, label: str) -> None:
        """Feedback is not part of these tests."""


def slack_config(tmp_path: Path, fake: FakeSlack, *, new: bool, extra: str = "") -> Path:
    """A deployment paging into the fake Slack: the `new` one has another channel, on-call
    group, escalation delay, ops channel and digest time."""
    deployment(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(
        SLACK_CONFIG.format(
            extra=extra,
            channel="#new" if new else "#old",
            escalate_after="1s" if new else "1h",
            on_call="S0NEW" if new else "S0OLD",
            base_url=fake.base_url,
            ops="#ops-new" if new else "#ops-old",
            digest_at="09:30" if new else "08:00",
        )
    )
    return config


class TestReloadReachesEveryPart:
    async def test_a_changed_route_reaches_pages_escalation_digest_and_console(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After a reload that moves the route to another channel and on-call group, the Slack
        page, the console, the escalation, the ops notices and the digest all use the new
        ones, and the digest's schedule moves to the new time."""
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        fake = FakeSlack()
        await fake.start()
        config = slack_config(tmp_path, fake, new=False)
        settings = load_settings(config)
        live = LiveSettings(settings)
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), Scorer())
        store = await Store.open(tmp_path / "s.db")
        console = io.StringIO()
        try:
            async with slack_running(live, store, pipeline.history, Learner()) as slack:
                notifiers = [ConsoleNotifier(live, console), *slack.notifiers]
                daemon = Daemon(pipeline, [], notifiers, store, queue_size=10, config=config,
                                live=live)  # fmt: skip
                slack_config(tmp_path, fake, new=True)
                assert await daemon.reload() is True
                for n in range(5):
                    mention = Mention(f"m{n}", "x", T0 + timedelta(minutes=1), "acme")
                    assert pipeline.feed(mention) == []
                [opened] = pipeline.feed(Mention("late", "x", T0 + timedelta(minutes=9), "acme"))
                await daemon.dispatcher.dispatch(opened)
                pipeline.learn_pending()  # as the daemon's loop does once a close's pages are out
                [page] = fake.ok_calls("chat.postMessage")
                assert page.args["channel"] == "#new"
                assert "to       #new" in console.getvalue()

                assert slack.escalator is not None and slack.digest is not None
                await asyncio.sleep(1.1)  # the new escalate_after: 1s (the old one was 1h)
                assert await slack.escalator.check() == 1
                escalation = fake.ok_calls("chat.postMessage")[-1].args
                assert "<!subteam^S0NEW>" in escalation["text"]
                assert "thread_ts" in escalation

                await slack.notifiers[0].notice("a notice")
                assert fake.ok_calls("chat.postMessage")[-1].args["channel"] == "#ops-new"

                due = slack.digest.next_run()
                assert due is not None and (due.hour, due.minute) == (9, 30)
                assert await slack.digest.post(T0 + timedelta(days=1, hours=9)) == 1
                digest = fake.ok_calls("chat.postMessage")[-1].args
                assert digest["channel"] == "#new" and "Daily digest" in digest["text"]
                assert "1 incident opened" in digest["text"]
        finally:
            await store.close()
            await fake.close()

    async def test_settings_read_at_start_up_warn_that_a_restart_is_needed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A reload that changes the state directory or the ops listener applies the rest and
        warns, naming them, that they need a restart; the warning repeats until then."""
        config = deployment(tmp_path)
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, Ops())
        config.write_text(
            config.read_text()
            + "state_dir: elsewhere\nops: {http_listen: 127.0.0.1:9999}\n"
            + "routes: {default: {channel: '#moved'}}\n"
        )
        with capture_logs() as logs:
            assert await daemon.reload() is True
            assert await daemon.reload() is True
        await store.close()
        warnings = [e for e in logs if e["event"] == "config.reload_needs_restart"]
        assert [w["settings"] for w in warnings] == [["state_dir", "ops"]] * 2
        assert all(w["log_level"] == "warning" for w in warnings)
        assert daemon.live.current.routes["default"].channel == "#moved"
