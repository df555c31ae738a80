"""Hot reload: a checked config and rule set swaps in whole; a broken one never does."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_process import start, wait_for

from crisiswatch.config import load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Bucket, Mention, Page, SeriesKey, Signal
from crisiswatch.pipeline import Pipeline
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

    async def test_a_changed_rule_file_is_reloaded_by_itself(self, tmp_path: Path) -> None:
        """The watcher notices an edited rule file and reloads without a signal."""
        config = deployment(tmp_path)
        store = await Store.open(tmp_path / "s.db")
        daemon = daemon_for(config, store, Ops(), watch_seconds=0.02)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await asyncio.sleep(0.1)
        (tmp_path / "rules" / "main.yaml").write_text(RULE.format(id="renamed", n=7))
        for _ in range(200):
            if daemon.reloads:
                break
            await asyncio.sleep(0.02)
        daemon.stopping.set()
        await run
        await store.close()
        assert daemon.reloads == 1
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
            process.kill()
        assert process.returncode == 0
