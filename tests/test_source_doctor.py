"""`crisiswatch doctor`: one line per problem and exit 1, or exit 0 with what is fine."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_reddit import CLIENT_ID, CLIENT_SECRET, FakeReddit
from fake_slack import TOKEN as SLACK_TOKEN
from fake_slack import FakeSlack
from fake_x import TOKEN, FakeX

from crisiswatch import doctor as doctor_module
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
        """Every credential present and accepted: exit 0 and an OK line per check; the default
        Reddit search lookback (10m) beyond the allowed lateness (2m) is a warning."""
        reddit, x = fakes
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        for key, value in [("REDDIT_CLIENT_ID", CLIENT_ID), ("REDDIT_CLIENT_SECRET", CLIENT_SECRET),
                           ("X_BEARER_TOKEN", TOKEN), ("INGEST_TOKEN", "t")]:  # fmt: skip
            monkeypatch.setenv(key, value)
        code, out = await run_doctor(write_config(tmp_path, reddit, x))
        assert code == 0, out
        assert "OK  reddit accepts the credentials" in out
        assert "OK  x accepts the credentials" in out
        assert "WARN sources.reddit.search_lookback (10m) is longer than" in out

    async def test_a_full_disk_is_a_problem(
        self, fakes: tuple[FakeReddit, FakeX], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A state directory on a full disk is not writable, though an empty file fits there
        (doctor had said OK, then the store and checkpoints failed)."""
        reddit, x = fakes

        def full(descriptor: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(doctor_module.os, "fsync", full)
        code, out = await run_doctor(write_config(tmp_path, reddit, x))
        assert code == 1
        assert f"state directory {tmp_path / 'state'} is not writable: No space left" in out

    async def test_an_x_query_too_long_for_x_is_a_problem(
        self, fakes: tuple[FakeReddit, FakeX], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A brand whose keywords make an X query over X's 512 characters: doctor says so, as
        `run` would refuse to start X."""
        reddit, x = fakes
        monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
        config = write_config(tmp_path, reddit, x)
        words = ", ".join(f"acme product number {n}" for n in range(40))
        text = config.read_text(encoding="utf-8").replace("[acme bank]", f"[{words}]")
        config.write_text(text, encoding="utf-8")
        code, out = await run_doctor(config)
        assert code == 1
        assert "sources.x: brand 'acme': its X query is" in out and "over X's 512" in out

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

    async def test_a_service_error_that_quotes_a_secret_shows_it_masked(
        self, fakes: tuple[FakeReddit, FakeX], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An error a service sends back may quote what it was sent: doctor's lines mask the
        secrets, as log lines do."""
        reddit, x = fakes
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        monkeypatch.setenv("X_BEARER_TOKEN", "quoted-secret-token-123")

        async def quoting(settings: object, fine: list[str], skip: str) -> list[str]:
            return ["x: the token 'quoted-secret-token-123' is not valid"]

        monkeypatch.setattr(doctor_module, "_reachable", quoting)
        code, out = await run_doctor(write_config(tmp_path, reddit, x))
        assert code == 1
        assert "x: the token '[redacted]' is not valid" in out.splitlines()
        assert "quoted-secret-token-123" not in out


class TestSlackSecrets:
    """Doctor asks for exactly the secrets `run` needs for Slack's interactivity mode."""

    @pytest.fixture
    async def slack(self) -> AsyncIterator[FakeSlack]:
        fake = FakeSlack()
        await fake.start()
        yield fake
        await fake.close()

    def config(self, tmp_path: Path, slack: FakeSlack, interactivity: str) -> Path:
        config = tmp_path / "config.yaml"
        config.write_text(
            f"rules: [{ROOT / 'rules'}]\nstate_dir: {tmp_path / 'state'}\n"
            "brands: [{id: acme, keywords: [acme bank]}]\n"
            "routes: {default: {channel: C0CRISIS}}\n"
            f"notify: {{slack: {{enabled: true, interactivity: {interactivity}, "
            f"base_url: '{slack.base_url}'}}}}\n",
            encoding="utf-8",
        )
        return config

    @pytest.mark.parametrize(
        ("interactivity", "needed", "unneeded"),
        [
            ("socket", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"),
            ("http", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"),
            ("none", None, "SLACK_APP_TOKEN"),
        ],
    )
    async def test_the_interactivity_modes_secret_is_checked(
        self,
        slack: FakeSlack,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        interactivity: str,
        needed: str | None,
        unneeded: str,
    ) -> None:
        """With the bot token alone: socket mode lacks the app token, http the signing secret,
        each a plain line saying what `run` would refuse to start without; `none` is fine."""
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        for name in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
        code, out = await run_doctor(self.config(tmp_path, slack, interactivity))
        if needed is None:
            assert code == 0, out
            return
        assert code == 1, out
        (line,) = out.splitlines()
        assert line == (
            f"notify.slack.interactivity: {interactivity} needs {needed}: set it in the "
            f"environment or as the systemd credential {needed.lower()}"
        )
        assert unneeded not in out and SLACK_TOKEN not in out
        monkeypatch.setenv(needed, "xapp-or-signing-secret")
        code, out = await run_doctor(self.config(tmp_path, slack, interactivity))
        assert code == 0 and "OK  slack accepts the credentials" in out, out
        assert "xapp-or-signing-secret" not in out
