"""`crisiswatch feedback`: labels queued in the store, learned by the running daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crisiswatch.cli import main
from crisiswatch.config import load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.store import Store

ROOT = Path(__file__).resolve().parents[1]
TEXT = "acme just gobbled my card at the machine"


class TestFeedbackCommand:
    async def test_queues_labelled_texts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--text/--label and a JSON-lines file (with a byte-order mark, as Windows tools
        write) both land in the state store."""
        monkeypatch.chdir(tmp_path)
        batch = tmp_path / "labels.jsonl"
        batch.write_text('\ufeff{"text": "fine app", "label": "positive"}\n\n')  # Windows' BOM
        assert (
            await asyncio.to_thread(main, ["feedback", "--text", TEXT, "--label", "negative"]) == 0
        )
        assert await asyncio.to_thread(main, ["feedback", "--file", str(batch)]) == 0
        store = await Store.open(tmp_path / "var" / "crisiswatch.sqlite3")
        pending = await store.pending_feedback()
        await store.close()
        assert [(text, label) for _, text, label in pending] == [
            (TEXT, "negative"),
            ("fine app", "positive"),
        ]

    def test_bad_input_is_refused_with_line_numbers(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A bad line or a label without text is an error; nothing is queued."""
        batch = tmp_path / "labels.jsonl"
        batch.write_text('{"text": "ok", "label": "angry"}\nnot json\n')
        assert main(["feedback", "--file", str(batch)]) == 1
        err = capsys.readouterr().err
        assert "line 1: 'label' must be one of negative, neutral, positive" in err
        assert "line 2: not valid JSON" in err
        assert main(["feedback", "--label", "negative"]) == 1
        assert main(["feedback", "--file", str(tmp_path / "missing.jsonl")]) == 1
        assert "cannot read" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("caf\udce9 awful", "--text: the text is not valid UTF-8"),  # a Latin-1 terminal
            ("   ", "--text: the text is empty"),
        ],
    )
    def test_a_text_it_cannot_learn_is_refused(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        text: str,
        problem: str,
    ) -> None:
        """A text with a lone surrogate (what Python makes of non-UTF-8 bytes in the arguments
        under a non-UTF-8 locale) or with nothing in it is a clear error; nothing is queued."""
        monkeypatch.chdir(tmp_path)
        assert main(["feedback", "--text", text, "--label", "negative"]) == 1
        assert problem in capsys.readouterr().err
        assert not (tmp_path / "var").exists()

    async def test_an_empty_text_in_a_file_is_refused_and_a_long_one_cut(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file's empty text is refused by line; a text over a post's 10,000 characters is cut
        to them, as the daemon cuts posts, and says so."""
        monkeypatch.chdir(tmp_path)
        empty, long = tmp_path / "empty.jsonl", tmp_path / "long.jsonl"
        empty.write_text('{"text": "ok", "label": "neutral"}\n{"text": "", "label": "neutral"}\n')
        long.write_text(f'{{"text": "{"awful " * 2_000}", "label": "negative"}}\n')
        assert await asyncio.to_thread(main, ["feedback", "--file", str(empty)]) == 1
        assert "line 2: the text is empty" in capsys.readouterr().err
        assert await asyncio.to_thread(main, ["feedback", "--file", str(long)]) == 0
        assert "line 1: the text is cut to its first 10,000 characters" in capsys.readouterr().err
        store = await Store.open(tmp_path / "var" / "crisiswatch.sqlite3")
        pending = await store.pending_feedback()
        await store.close()
        assert [(len(text), label) for _, text, label in pending] == [(10_000, "negative")]


class TestDaemonLearns:
    async def test_the_running_daemon_learns_queued_labels(self, tmp_path: Path) -> None:
        """Queued complaints raise P(negative) of that wording; the rows are marked learned."""
        (tmp_path / "empty.jsonl").write_text("")
        config = tmp_path / "config.yaml"
        config.write_text(
            f"rules: [{ROOT / 'rules'}]\nbrands:\n  - id: acme\n    keywords: [acme]\n"
            "sources: {replay: {path: empty.jsonl}}\n"
        )
        settings = load_settings(config)
        model = SentimentModel.load_default()
        before = model.negative_one(TEXT)
        store = await Store.open(tmp_path / "s.db")
        await store.add_feedback([(TEXT, "negative")] * 20, "test")
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), model)
        daemon = Daemon(pipeline, [], [], store, queue_size=10, config=config, watch_seconds=0.02)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        for _ in range(200):
            if not await store.pending_feedback():
                break
            await asyncio.sleep(0.02)
        daemon.stopping.set()
        await run
        await store.close()
        assert model.negative_one(TEXT) > before + 0.05
