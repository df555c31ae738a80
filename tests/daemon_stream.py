"""A calm brand's stream with one angry surge, and what runs it: the daemon tests' scaffolding."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import conftest
import orjson

from crisiswatch.config import Settings, load_settings
from crisiswatch.domain import Page

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 2, tzinfo=UTC)


class AngryScorer:
    """Negative when the text says so: the daemon's tests do not depend on the shipped model."""

    def negative_one(self, text: str) -> float:
        return 0.95 if "furious" in text else 0.05


class Recorder(conftest.Recorder):
    """Keeps the pages it is sent, or (`fail`) refuses each as a service that is down."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    async def send(self, page: Page) -> None:
        if self.fail:
            raise ConnectionError("service down")
        await super().send(page)


def write_stream(path: Path, *, hours: int = 30, surge_at: int = 20, bad_lines: int = 0) -> int:
    """A calm brand with one angry surge; returns the number of lines written."""
    rng = random.Random(7)
    lines = []
    for minute in range(hours * 60):
        surge = surge_at * 60 <= minute < surge_at * 60 + 60
        for _ in range(rng.randint(8, 16) if surge else rng.randint(0, 2)):
            angry = surge and rng.random() < 0.8
            lines.append(
                {
                    "id": f"x:{len(lines)}",
                    "source": "x",
                    "created_at": (T0 + timedelta(minutes=minute)).isoformat(),
                    "text": "furious at acme bank, card gone" if angry else "acme bank is fine",
                    "author": f"user{rng.randint(0, 10_000)}",
                }
            )
    body = [orjson.dumps(line) for line in lines]
    for n in range(bad_lines):
        body.insert(10 + n * 50, b'{"id": "broken", "text": ')
    path.write_bytes(b"\n".join(body) + b"\n")
    return len(body)


def settings_for(tmp_path: Path, stream: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: [{ROOT / 'rules'}]\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "brands:\n  - id: acme\n    keywords: [acme bank]\n    topics: {cards: [card]}\n"
        f"sources:\n  replay: {{path: {stream}}}\n",
        encoding="utf-8",
    )
    return load_settings(config)
