"""`crisiswatch doctor`: one line per problem and exit 1, or exit 0 with what is fine."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit
from fake_x import TOKEN, FakeX

from crisiswatch.doctor import doctor

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(
    "ignore:BasicAuth is deprecated:DeprecationWarning",
    "ignore:The .auth. parameter is deprecated:DeprecationWarning",
)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeReddit, FakeX]]:
    reddit, x = FakeReddit(), FakeX()
    await reddit.start()
    await x.start()
    yield reddit, x
    await reddit.close()
    await x.close()


def write_config(tmp_path: Path, reddit: FakeReddit, x: FakeX) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: [{ROOT / 'rules'}]\nstate_dir: {tmp_path / 'state'}\n"
        "brands:\n  - id: acme\n    keywords: [acme bank]\n"
        "sources:\n"
        f"  reddit: {{user_agent: 'test:crisiswatch:1.0 (by u/tests)', oauth_url: '{reddit.url}',"
        f" reddit_url: '{reddit.url}'}}\n"
        f"  x: {{api_url: '{x.url}'}}\n"
        "  http_ingest: {listen: '127.0.0.1:0'}\n",
        encoding="utf-8",
    )
    return config


async def run_doctor(config: Path) -> tuple[int, str]:
    import asyncio

    out = io.StringIO()
    code = await asyncio.to_thread(doctor, config, out)
    return code, out.getvalue()


class TestDoctor:
    async def test_all_fine(
        self, fakes: tuple[FakeReddit, FakeX], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every credential present and accepted: exit 0 and an OK line per check."""
        reddit, x = fakes
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        for key, value in [("REDDIT_CLIENT_ID", CLIENT_ID), ("REDDIT_CLIENT_SECRET", CLIENT_SECRET),
                           ("X_BEARER_TOKEN", TOKEN), ("INGEST_TOKEN", "t")]:  # fmt: skip
            monkeypatch.setenv(key, value)
        code, out = await run_doctor(write_config(tmp_path, reddit, x))
        assert code == 0, out
        assert "OK  reddit accepts the credentials" in out
        assert "OK  x accepts the credentials" in out

    async def test_each_problem_on_its_own_line(
        self, fakes: tuple[FakeReddit, FakeX], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A missing token and a refused secret: one plain line each, no secret shown, exit 1."""
        reddit, x = fakes
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        monkeypatch.setenv("REDDIT_CLIENT_ID", CLIENT_ID)
        monkeypatch.setenv("REDDIT_CLIENT_SECRET", "wrong-secret")
        monkeypatch.setenv("X_BEARER_TOKEN", "wrong-token")
        monkeypatch.delenv("INGEST_TOKEN", raising=False)
        code, out = await run_doctor(write_config(tmp_path, reddit, x))
        lines = out.splitlines()
        assert code == 1
        assert any(line.startswith("sources.http_ingest needs INGEST_TOKEN") for line in lines)
        assert any(line.startswith("reddit: ") for line in lines)
        assert any(line.startswith("x: ") and "401" in line for line in lines)
        assert "wrong-secret" not in out and "wrong-token" not in out
        assert not any(line.startswith("OK") for line in lines)
