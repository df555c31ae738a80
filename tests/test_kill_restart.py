"""kill -9 and restart: the demo's incidents are each posted to Slack exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from daemon_process import start
from fake_slack import TOKEN, FakeSlack

from crisiswatch.cli import DEMO_DIR

ROOT = Path(__file__).resolve().parents[1]


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


class TestKillAndRestart:
    async def test_each_incident_is_posted_once_across_a_kill(self, tmp_path: Path) -> None:
        """kill -9 right after Slack took the first post, before the store recorded it; after
        the restart that incident's message is found by its metadata and edited, not re-posted."""
        fake = FakeSlack()
        await fake.start()
        config = deployment(tmp_path, fake.base_url)

        def posts() -> list[str]:
            return [
                str(c.args.get("text", ""))
                for c in fake.ok_calls("chat.postMessage")
                if not c.args.get("thread_ts")
            ]

        processes: list[subprocess.Popen[bytes]] = []
        try:
            processes.append(start(config, tmp_path / "daemon.log", SLACK_BOT_TOKEN=TOKEN))
            await wait_until(lambda: len(posts()) >= 1, 60)
            processes[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(processes[0].wait, 30)
            processes.append(start(config, tmp_path / "daemon.log", SLACK_BOT_TOKEN=TOKEN))
            await wait_until(lambda: len(posts()) >= 3, 90)
            await asyncio.sleep(1.0)  # anything doubled would come now
            processes[1].send_signal(signal.SIGTERM)
            await asyncio.to_thread(processes[1].communicate, timeout=60)
        finally:
            for process in processes:
                process.kill()
            await fake.close()
        assert len(posts()) == 3, posts()
