"""kill -9 and restart, at the points where a crash could lose or repeat something: the demo run
against the fake Slack ends with the same messages, thread replies and seen mentions as a run
that was never interrupted."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from daemon_process import reap, start
from fake_slack import TOKEN, FakeSlack, Hold

from crisiswatch.cli import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]
Outcome = tuple[dict[str, tuple[dict[str, Any], list[str]]], set[str]]


def deployment(tmp_path: Path, base_url: str) -> Path:
    """The demo as a configured daemon paging the fake Slack, replayed at 40,000× speed."""
    demo = (DEMO_DIR / "config.yaml").read_text()
    demo = demo.replace("rules: [../default_rules]", f"rules: [{ROOT / 'rules'}]")
    demo = demo.replace(
        "path: demo_mentions.jsonl.gz", f"path: {DEMO_DIR / 'demo_mentions.jsonl.gz'}"
    )
    demo = demo.replace("speed: 0", "speed: 40000")  # two days in about four seconds
    demo = demo.replace('channel: "#crisis-demo"', "channel: C0DEMO")  # ids: history is by id
    config = tmp_path / "config.yaml"
    config.write_text(
        demo
        + "state_dir: state\n"
        + f"notify: {{console: false, slack: {{enabled: true, base_url: '{base_url}', "
        + "interactivity: none, digest_at: null}}\n"
        + "ops: {checkpoint_every: 1s}\n"
    )
    return config


async def wait_until(check: Callable[[], bool], seconds: float) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def first_post(method: str, args: dict[str, Any]) -> bool:
    return method == "chat.postMessage" and not args.get("thread_ts")


def thread_reply(method: str, args: dict[str, Any]) -> bool:
    return method == "chat.postMessage" and bool(args.get("thread_ts"))


@dataclass(frozen=True)
class KillPoint:
    """Where the first process dies: when Slack holds a call (taken or not), or a while into the
    replay (`after` seconds from the first post Slack took)."""

    name: str
    matches: Callable[[str, dict[str, Any]], bool] | None = None
    nth: int = 1  # the nth matching call is held
    take: bool = False
    after: float = 0.0


KILL_POINTS = [
    KillPoint("mid-ingest, between pages", after=0.4),
    KillPoint("outbox written, first post not yet at Slack", first_post, nth=2),
    KillPoint("first post at Slack, not yet recorded", first_post, nth=2, take=True),
    KillPoint("thread reply at Slack, not yet recorded", thread_reply, take=True),
]


async def run_demo(tmp_path: Path, kill: KillPoint | None, reloads: int = 0) -> Outcome:
    """Run the demo to its end (killed once and restarted, if `kill`; sent `reloads` SIGHUPs
    once paging has begun); what Slack shows and the ids of the mentions the daemon took in."""
    fake = FakeSlack()
    await fake.start()
    config = deployment(tmp_path, fake.base_url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if kill is not None:
            held = await _hold_nth(fake, kill)
            processes.append(start(config, tmp_path / "killed.log", SLACK_BOT_TOKEN=TOKEN))
            if held is not None:
                await asyncio.wait_for(held.reached.wait(), 60)
            else:
                await wait_until(lambda: bool(fake.ok_calls("chat.postMessage")), 60)
                await asyncio.sleep(kill.after)
            ended = b'"source.ended"' in (tmp_path / "killed.log").read_bytes()
            assert processes[0].poll() is None and not ended, "the replay ended before the kill"
            processes[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(processes[0].wait, 30)
            fake.release()
        log = tmp_path / "daemon.log"
        processes.append(start(config, log, SLACK_BOT_TOKEN=TOKEN))
        if reloads:
            await wait_until(lambda: bool(fake.ok_calls("chat.postMessage")), 60)
            for sent in range(1, reloads + 1):  # one at a time: signals sent together merge
                processes[-1].send_signal(signal.SIGHUP)
                await wait_until(partial(_logged, log, b'"daemon.reloading"', sent), 30)
        await wait_until(lambda: b'"source.ended"' in log.read_bytes(), 120)
        processes[-1].send_signal(signal.SIGTERM)  # drains the queue and the outbox, then exits
        code = await asyncio.to_thread(processes[-1].wait, 60)
        assert code == 0, log.read_text()[-3000:]
    finally:
        for process in processes:
            await asyncio.to_thread(reap, process)
        fake.release()
        await fake.close()
    with sqlite3.connect(tmp_path / "state" / "crisiswatch.sqlite3") as db:
        seen = {row[0] for row in db.execute("SELECT id FROM seen")}
    return fake.threads(), seen


def _logged(log: Path, event: bytes, times: int) -> bool:
    return log.read_bytes().count(event) >= times


async def _hold_nth(fake: FakeSlack, kill: KillPoint) -> Hold | None:
    """Hold the `nth` call that matches the kill point (None for a kill by time)."""
    if kill.matches is None:
        return None
    matches, count = kill.matches, 0

    def nth(method: str, args: dict[str, Any]) -> bool:
        nonlocal count
        count += matches(method, args)
        return matches(method, args) and count == kill.nth

    return fake.hold(nth, take=kill.take)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return asyncio.run(run_demo(tmp_path_factory.mktemp("uninterrupted"), None))


class TestKillAndRestart:
    def test_an_uninterrupted_run_pages_each_incident(self, uninterrupted: Outcome) -> None:
        """The reference: the demo's three incidents, each one message with its thread."""
        threads, seen = uninterrupted
        assert len(threads) == 3 and all(replies for _, replies in threads.values())
        assert len(seen) > 1_000

    @pytest.mark.parametrize("kill", KILL_POINTS, ids=lambda k: k.name)
    async def test_same_pages_exactly_once_after_kill_9(
        self, kill: KillPoint, uninterrupted: Outcome, tmp_path: Path
    ) -> None:
        """kill -9 at this point, restart: every page reaches Slack exactly once, with the same
        content as without the kill (baselines kept, nothing re-learned), and every mention was
        taken in."""
        threads, seen = await run_demo(tmp_path, kill)
        expected_threads, expected_seen = uninterrupted
        assert seen == expected_seen
        assert threads.keys() == expected_threads.keys()
        for incident, (message, replies) in expected_threads.items():
            assert threads[incident][1] == replies, incident
            assert threads[incident][0] == message, incident

    async def test_reloads_mid_replay_lose_nothing(
        self, uninterrupted: Outcome, tmp_path: Path
    ) -> None:
        """SIGHUP while mentions stream in and pages go out: the same pages and mentions."""
        threads, seen = await run_demo(tmp_path, None, reloads=4)
        log = (tmp_path / "daemon.log").read_bytes()
        assert log.count(b'"daemon.reloading"') == 4  # signals close together reload once
        assert log.rindex(b'"config.reloaded"') < log.index(b'"source.ended"')  # mid-replay
        assert (threads, seen) == uninterrupted
