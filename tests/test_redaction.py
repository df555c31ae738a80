"""Secrets never reach a log line: ours, the libraries', exceptions and keys named like secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from crisiswatch.config import secret
from crisiswatch.ops.logging import configure_logging
from crisiswatch.ops.redact import MASK

SECRET = "hunter2-but-much-longer-0042"


@pytest.fixture
def json_logs() -> Iterator[None]:
    """The daemon's JSON log set-up for one test, then the previous one back."""
    saved, handlers, level = structlog.get_config(), logging.root.handlers, logging.root.level
    configure_logging("info", json=True)
    yield
    structlog.configure(**saved)
    logging.root.handlers, logging.root.level = handlers, level


def lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


class TestRedaction:
    def test_a_secret_handed_out_is_masked_everywhere(
        self,
        json_logs: None,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Once `secret()` has read it, the value is masked in our fields, in nested values, in
        the libraries' stdlib log records and in exception text."""
        monkeypatch.setenv("INGEST_TOKEN", SECRET)
        assert secret("INGEST_TOKEN") == SECRET
        log = structlog.get_logger("crisiswatch.test")
        log.info("source.failed", url=f"http://127.0.0.1/ingest?t={SECRET}", tries=[SECRET, 1])
        logging.getLogger("slack_sdk").warning("sending with %s as the token", SECRET)
        try:
            raise ConnectionError(f"refused for {SECRET}")
        except ConnectionError:
            log.exception("source.crashed")
        err = capsys.readouterr().err
        assert SECRET not in err
        records = lines(err)
        assert len(records) == 3 and err.count(MASK) == 4
        assert records[1]["logger"] == "slack_sdk"  # the library's line went through ours

    def test_a_traceback_on_a_terminal_is_masked_too(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The console renderer (a terminal) shows an exception whose message holds a secret
        with the secret masked, as JSON logs do."""
        saved, handlers, level = structlog.get_config(), logging.root.handlers, logging.root.level
        configure_logging("info", json=False)
        try:
            monkeypatch.setenv("INGEST_TOKEN", SECRET)
            secret("INGEST_TOKEN")
            try:
                raise ConnectionError(f"refused for {SECRET}")
            except ConnectionError:
                structlog.get_logger("crisiswatch.test").exception("source.crashed")
        finally:
            structlog.configure(**saved)
            logging.root.handlers, logging.root.level = handlers, level
        err = capsys.readouterr().err
        assert "ConnectionError: refused for [redacted]" in err and SECRET not in err

    def test_token_shapes_and_secret_keys_are_masked_unseen(
        self, json_logs: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Values never handed out are still masked when shaped like a Slack token or bearer
        credential, or held under a key named like a secret; other fields stay readable."""
        log = structlog.get_logger("crisiswatch.test")
        log.warning(
            "slack.call",
            error="invalid_auth for xoxb-1234-5678-abcdefghijkl",
            headers={"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"},
            client_secret="plain-value",
            note="sent Bearer abc.def.ghi-jkl",
        )
        err = capsys.readouterr().err
        (record,) = lines(err)
        assert record["error"] == f"invalid_auth for {MASK}"
        assert record["headers"] == {"Authorization": MASK, "Accept": "application/json"}
        assert record["client_secret"] == MASK and record["note"] == f"sent {MASK}"

    def test_credentials_win_over_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A systemd credential file (name lowercased) is preferred to the environment."""
        (tmp_path / "slack_bot_token").write_text("xoxb-from-credentials\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-environment")
        assert secret("SLACK_BOT_TOKEN") == "xoxb-from-credentials"
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        assert secret("SLACK_BOT_TOKEN") == "xoxb-from-environment"
