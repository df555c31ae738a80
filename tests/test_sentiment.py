"""The shipped sentiment model: loading, hostile input, online learning, checkpoints, CLI."""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import subprocess
import sys

import pytest

from crisiswatch.bench.sentiment import prequential, scores, shift_stream
from crisiswatch.cli import main
from crisiswatch.enrich import train_sentiment
from crisiswatch.enrich.predict_cli import predict_stream
from crisiswatch.enrich.sentiment import LABELS, SentimentModel, SentimentScore, features, tokens
from crisiswatch.mentions import LINE_LIMIT

HOSTILE = [
    "",
    "   ",
    "😀😀😀",
    "😡😡",
    "🙂",
    "こんにちは世界、今日はいい天気ですね",
    "Привет, как дела? Всё хорошо.",
    "مرحبا كيف حالك",
    "x" * 10_000,
    "terrible " * 2_000,
    "\x00\u202e\ufeff\ud800",
    "!!!???...",
    "@user @user http://t.co/abc #hashtag",
    "NOT not n't never no",
]


class TestShippedModel:
    def test_loads_from_package_data(self) -> None:
        """The shipped weights load and give a probability."""
        model = SentimentModel.load_default()
        assert 0.0 <= model.negative_one("hello") <= 1.0

    def test_obvious_texts(self) -> None:
        """Clear complaints score negative, praise positive, VADER's blind spot is caught."""
        model = SentimentModel.load_default()
        assert model.predict_one("worst service ever, I hate this, total scam").label == "negative"
        assert model.predict_one("I love it, thank you so much, amazing!").label == "positive"
        assert model.negative_one("Is Acme down for anyone else? can't log in") > 0.5

    @pytest.mark.parametrize("text", HOSTILE)
    def test_hostile_texts(self, text: str) -> None:
        """Empty, emoji-only, non-English and huge texts score without errors."""
        model = SentimentModel.load_default()
        score = model.predict_one(text)
        assert score.label in LABELS
        assert math.isfinite(score.negative) and 0.0 <= score.negative <= 1.0
        assert score.negative == model.negative_one(text)

    def test_not_everything_negative(self) -> None:
        """Texts the model cannot read are not all called negative."""
        model = SentimentModel.load_default()
        unreadable = ["", "こんにちは世界", "Привет, как дела?", "x" * 10_000, "🙂", "1234"]
        assert sum(model.predict_one(t).label == "negative" for t in unreadable) <= 1


class TestFeatures:
    def test_tokens(self) -> None:
        """Words, punctuation, emoticons and emoji are tokens; a URL's ":/" is no emoticon."""
        assert tokens("Can’t log in :( http://t.co/x 😡😡!!") == [
            "can't", "log", "in", ":(", "http", "t", ".", "co", "x", "😡", "😡", "!", "!",
        ]  # fmt: skip

    def test_features(self) -> None:
        """Negation-marked tokens, bigrams and prefixes."""
        assert features("not working today") == [
            "not", "working_N", "today_N", "not working", "working today", "^not", "^work", "^toda",
        ]  # fmt: skip


class TestOnlineLearning:
    def test_learn_moves_prediction_towards_label(self) -> None:
        """Negative feedback raises P(negative); positive feedback lowers it."""
        text = "the kiosk ate my card again"
        for label, sign in (("negative", 1), ("positive", -1)):
            model = SentimentModel.load_default()
            before = model.negative_one(text)
            for _ in range(5):
                model.learn_one(text, label)
            assert sign * (model.negative_one(text) - before) > 0.05

    def test_learning_leaves_the_shared_base_alone(self) -> None:
        """One model's feedback does not change another's predictions."""
        learner, other = SentimentModel.load_default(), SentimentModel.load_default()
        before = other.negative_one("payout pending for nine days")
        for _ in range(5):
            learner.learn_one("payout pending for nine days", "negative")
        assert other.negative_one("payout pending for nine days") == before

    def test_rejects_unknown_label(self) -> None:
        """A label outside LABELS is an error, not a silent update."""
        with pytest.raises(ValueError, match="label"):
            SentimentModel.load_default().learn_one("text", "angry")

    def test_vocabulary_shift_adaptation(self) -> None:
        """On unseen complaint vocabulary, 10 % labels lift negative F1 well above cold start."""
        texts, gold = shift_stream(2000, seed=11)
        cold_model = SentimentModel.load_default()
        cold = scores(gold, [cold_model.predict_one(t).label for t in texts])
        warm = scores(gold, prequential(SentimentModel.load_default(), texts, gold))
        late = scores(gold[1000:], prequential(SentimentModel.load_default(), texts, gold)[1000:])
        assert warm.neg_f1 > cold.neg_f1 + 0.15
        assert late.neg_f1 > 0.8
        assert warm.macro_recall > cold.macro_recall


class TestCheckpoint:
    def _trained(self) -> SentimentModel:
        model = SentimentModel.load_default()
        texts, gold = shift_stream(200, seed=3)
        for text, label in zip(texts, gold, strict=True):
            model.learn_one(text, label)
        return model

    def test_state_round_trip_is_exact(self) -> None:
        """from_state(state()) gives the same state and the same predictions."""
        model = self._trained()
        restored = SentimentModel.from_state(model.state())
        assert restored.state() == model.state()
        for text in ("OTP never arrives", "love the new app", "", "x" * 10_000):
            assert restored.predict_one(text) == model.predict_one(text)

    def test_untrained_round_trip(self) -> None:
        """A model that learned nothing checkpoints as nothing learned."""
        model = SentimentModel.load_default()
        assert SentimentModel.from_state(model.state()).state() == model.state()

    def test_pickle_round_trip(self) -> None:
        """Pickling goes through the same checkpoint."""
        model = self._trained()
        assert pickle.loads(pickle.dumps(model)).state() == model.state()

    def test_rejects_other_versions(self) -> None:
        """A checkpoint from another format version is refused."""
        with pytest.raises(ValueError, match="version"):
            SentimentModel.from_state(b'{"version": 999}')


class TestTraining:
    def test_training_is_deterministic(self) -> None:
        """Training twice on the same small sample gives byte-identical model documents."""
        texts, gold = shift_stream(300, seed=5)
        pairs = zip(texts, gold, strict=True)
        sample = [train_sentiment.Example(t, LABELS.index(g)) for t, g in pairs]
        first = train_sentiment.train(sample, train_sentiment.CURATED, c=0.5)
        second = train_sentiment.train(sample, train_sentiment.CURATED, c=0.5)
        assert first == second
        recall, _ = train_sentiment.evaluate(train_sentiment.to_model(first), sample)
        assert recall > 0.9

    def test_nbsvm_view_alone_classifies(self) -> None:
        """The NBSVM view, folded in without the regression, separates the labels it was fit on."""
        texts, gold = shift_stream(300, seed=5)
        pairs = zip(texts, gold, strict=True)
        sample = [train_sentiment.Example(t, LABELS.index(g)) for t, g in pairs]
        fitted = train_sentiment.fit(sample, {}, 0.5)
        only_svm = dataclasses.replace(fitted, w=0 * fitted.w, b=0 * fitted.b)
        doc = train_sentiment.fold(only_svm, (0.0, 1.0), (0.0, 0.0))
        recall, _ = train_sentiment.evaluate(train_sentiment.to_model(doc), sample)
        assert recall > 0.9
        silent = train_sentiment.fold(only_svm, (0.0, 0.0), (0.0, 0.0))
        assert train_sentiment.evaluate(train_sentiment.to_model(silent), sample)[0] < 0.5

    def test_calibrate_balances_decisions(self) -> None:
        """Offsets chosen on a hold-out undo a bias against a class and leave a fair model alone."""
        texts, gold = shift_stream(300, seed=5)
        pairs = zip(texts, gold, strict=True)
        sample = [train_sentiment.Example(t, LABELS.index(g)) for t, g in pairs]

        def model(offsets: tuple[float, float]) -> train_sentiment.BaseWeights:
            doc = train_sentiment.train(sample, {}, 0.01, offsets=offsets)
            return train_sentiment.to_model(doc)

        assert train_sentiment.calibrate(model((0.0, 0.0)), sample) == (0.0, 0.0)
        dn, dp = train_sentiment.calibrate(model((-1.0, -1.0)), sample)
        assert dn > 0
        fixed = train_sentiment.evaluate(model((dn - 1.0, dp - 1.0)), sample)[0]
        assert fixed > train_sentiment.evaluate(model((-1.0, -1.0)), sample)[0] + 0.1

    def test_clean_matches_tweeteval_conventions(self) -> None:
        """Pool escapes are undone and handles become @user."""
        raw = '"@Acme I\\u2019m done\\u002c &amp; \\"angry\\""'
        assert train_sentiment.clean(raw) == '@user I’m done, & "angry"'


class TestPredictStream:
    def _run(self, lines: list[str], learn: bool = True) -> tuple[list[str], str, int]:
        out, err = io.StringIO(), io.StringIO()
        inp = io.BytesIO("".join(line + "\n" for line in lines).encode())
        status = predict_stream(inp, out, err, learn, SentimentModel.load_default())
        return out.getvalue().splitlines(), err.getvalue(), status

    def test_good_lines(self) -> None:
        """One JSON line out per line in, in order."""
        lines = ['{"text": "I hate this, worst ever"}', '{"text": "thank you, love it!"}']
        outputs, err, status = self._run(lines)
        assert status == 0 and err == ""
        assert [o.split('"')[3] for o in outputs] == ["negative", "positive"]
        assert all('"negative": ' in o for o in outputs)

    def test_a_byte_order_mark_before_the_first_line_is_no_part_of_it(self) -> None:
        """Files saved by Windows tools start with one: the first line is read as JSON, and a
        mark anywhere else is still a bad line."""
        outputs, err, status = self._run(['\ufeff{"text": "love it"}', '\ufeff{"text": "x"}'])
        assert outputs[0].startswith('{"label": ') and outputs[1] == "null"
        assert err.startswith("line 2: ") and status == 1

    def test_a_line_over_the_limit_is_a_bad_line(self) -> None:
        """A line too long to read whole gets its error and null, and the next line its score."""
        outputs, err, status = self._run(['{"text": "' + "a" * LINE_LIMIT + '"}', '{"text": "ok"}'])
        assert outputs[0] == "null" and outputs[1].startswith('{"label": ')
        assert err == "line 1: longer than 1,048,576 bytes: skipped\n" and status == 1

    def test_labeled_lines_learn_after_predicting(self) -> None:
        """A label is learned after that line's prediction; --no-learn ignores labels."""
        line = '{"text": "the kiosk ate my card", "label": "negative"}'
        learned, _, _ = self._run([line] * 8)
        frozen, _, _ = self._run([line] * 8, learn=False)
        assert learned[0] == frozen[0] == frozen[-1]
        assert learned[-1] != learned[0]

    def test_bad_lines(self) -> None:
        """Bad lines give null and an error naming the line, and never stop the stream."""
        lines = ["not json", "[1, 2]", '{"text": 5}', '{"text": "x", "label": "angry"}', "",
                 '{"text": "fine"}']  # fmt: skip
        outputs, err, status = self._run(lines)
        assert outputs[:5] == ["null"] * 5
        assert outputs[5].startswith('{"label": ')
        assert status == 1
        for number in range(1, 6):
            assert f"line {number}:" in err

    def test_a_line_that_is_not_utf8_is_a_bad_line(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`sentiment predict` reads bytes: a line that is not UTF-8 (a Latin-1 export, say)
        is `null` and an error naming it, in its place; the lines around it are scored, and
        stdin's own decoding (strict in a UTF-8 locale) never stops the command."""
        data = b'{"text": "good"}\n{"text": "caf\xe9 awful"}\n{"text": "good"}\n'
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        assert main(["sentiment", "predict"]) == 1
        captured = capsys.readouterr()
        outputs = captured.out.splitlines()
        assert len(outputs) == 3 and outputs[1] == "null"
        assert outputs[0].startswith('{"label": ') and outputs[2] == outputs[0]
        assert captured.err == "line 2: not UTF-8 text\n"

    def test_scores_are_json(self) -> None:
        """The output of a line parses as the documented object."""
        import json

        outputs, _, _ = self._run(['{"text": "meh"}'])
        doc = json.loads(outputs[0])
        assert set(doc) == {"label", "negative"}
        assert SentimentScore(doc["label"], doc["negative"]).label in LABELS


@pytest.mark.parametrize("closed", ["<&-", ">&-", "2>&-"])
def test_a_closed_standard_stream_is_no_traceback(closed: str) -> None:
    """Run with stdin or stdout closed by the caller, a command reads nothing or writes to
    nowhere (it had failed with a traceback: Python has no sys.stdin or sys.stdout then)."""
    command = (
        f'echo \'{{"text": "ok"}}\' | {sys.executable} -m crisiswatch sentiment predict {closed}'
    )
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
