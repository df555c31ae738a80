"""Train the shipped sentiment model from the SemEval 2013-2016 pool (offline, deterministic).

    python -m crisiswatch.enrich.train_sentiment [--data ../shared/data] [--out PATH] [--select]

Learner: multinomial logistic regression with balanced class weights and L2 regularisation,
solved with L-BFGS, on the features of `crisiswatch.enrich.sentiment.features` plus four lexicon
columns (summed positive and negative valence, inside and outside negation scope) from VADER's
lexicon (MIT licence; needs the vaderSentiment package) and a curated complaint/emoji lexicon.
Every lexicon column is linear in the word features, so its weight is folded into the word table:
the shipped model is one table of (negative, positive) logits per feature, relative to neutral.
15 % of the pool (by a hash of the text) is held out for `--select`; the shipped model is fitted
on the whole pool with the selected regularisation. TweetEval's test set is never read here.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import orjson
from numpy.typing import NDArray
from scipy import optimize, sparse  # type: ignore[import-untyped]

from crisiswatch.enrich.sentiment import (
    FEATURES_VERSION,
    LABELS,
    MODEL_FILE,
    NEGATED,
    BaseWeights,
    SentimentModel,
    features,
    parse_model,
    tokens,
)

DEFAULT_DATA = Path("../shared/data")
DEFAULT_OUT = Path(__file__).with_name(MODEL_FILE)
DEFAULT_C = 0.02  # best holdout macro-recall of --select
MIN_DF = 2
HOLDOUT_PERCENT = 15
PRUNE = 0.002  # features whose two logits are both smaller than this are left out
DIGITS = 4

# Curated valences on VADER's -4..4 scale: complaint vocabulary that VADER lacks, emoji (absent
# from the ASCII-only SemEval pool) and the emoticon words of `sentiment.tokens`.
CURATED: dict[str, float] = {
    "outage": -2.0, "outages": -2.0, "downtime": -1.8, "down": -0.6, "refund": -1.0,
    "refunds": -1.0, "overcharged": -2.2, "overcharging": -2.2, "scammed": -2.5, "ripoff": -2.3,
    "unusable": -2.3, "bricked": -2.3, "crashed": -1.8, "crashing": -1.8, "crashes": -1.6,
    "glitch": -1.5, "glitchy": -1.8, "glitches": -1.5, "buggy": -1.8, "bugs": -1.0,
    "laggy": -1.6, "lagging": -1.4, "buffering": -1.2, "unresponsive": -1.8, "cancelled": -1.2,
    "canceled": -1.2, "delayed": -1.3, "delays": -1.3, "stranded": -2.0, "overbooked": -1.6,
    "missing": -1.2, "swallowed": -1.0, "declined": -1.0, "hacked": -2.0, "breach": -1.8,
    "leaked": -1.6, "throttled": -1.5, "throttling": -1.5, "disconnected": -1.2,
    "disconnecting": -1.2, "unreachable": -1.5, "error": -1.2, "errors": -1.2, "fees": -0.8,
    "recalled": -1.2, "defective": -2.0, "faulty": -1.8, "malfunction": -1.8,
    "nightmare": -2.4, "joke": -0.8, "ridiculous": -1.8, "shambles": -2.0, "incompetent": -2.4,
    "charged twice": -2.0, "double charged": -2.0, "on hold": -1.0, "still waiting": -1.5,
    "no response": -1.5, "not working": -2.0, "fix this": -1.2,
    "emo_smile": 2.0, "emo_heart": 2.5, "emo_sad": -2.0,
    "😂": 1.0, "🤣": 1.0, "😹": 1.0, "❤": 2.5, "♥": 2.5, "💙": 2.3, "💜": 2.3, "💛": 2.3,
    "💚": 2.3, "💕": 2.5, "💖": 2.5, "💞": 2.5, "💗": 2.5, "😍": 2.8, "🥰": 2.8, "😘": 2.3,
    "😊": 2.3, "☺": 2.3, "😁": 2.0, "😀": 2.0, "😃": 2.0, "😄": 2.0, "😆": 1.5, "😉": 1.2,
    "😎": 1.5, "😇": 1.8, "🤗": 2.0, "👏": 2.0, "🙌": 2.0, "👍": 2.0, "👌": 1.8, "🙏": 1.2,
    "🔥": 1.5, "🎉": 2.3, "💯": 1.8, "✨": 1.2, "💪": 1.5, "✌": 1.0, "🏆": 2.0, "🥳": 2.5,
    "😭": -1.0, "😢": -2.0, "😥": -1.8, "😩": -1.8, "😫": -1.8, "😔": -1.8, "😞": -2.0,
    "😟": -1.8, "😕": -1.2, "🙁": -1.8, "☹": -2.0, "😒": -1.8, "🙄": -1.8, "😑": -1.0,
    "😐": -0.5, "😤": -2.0, "😠": -2.5, "😡": -2.8, "🤬": -3.0, "👎": -2.0, "🖕": -2.5,
    "💩": -1.8, "😱": -1.2, "😨": -1.8, "😰": -1.8, "😷": -1.0, "🤢": -2.3, "🤮": -2.5,
    "💔": -2.3, "😖": -1.8, "😣": -1.5, "😓": -1.2, "🤦": -1.8, "😬": -0.8,
}  # fmt: skip
# Words that signal a complaint only when negated ("can't log in", "won't load").
NEGATED_ONLY: dict[str, float] = dict.fromkeys(
    ("work", "works", "working", "load", "loading", "login", "log", "connect", "access", "open",
     "sign", "pay", "help", "respond", "responding", "fix", "fixed", "refund", "answer", "reply",
     "arrive", "arrived", "start", "charge"),
    1.5,
)  # fmt: skip
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_HANDLE = re.compile(r"@\w+")
_ENTITIES = {"&amp;": "&", "&gt;": ">", "&lt;": "<", "&quot;": '"', '\\"': '"'}
_LEX_COLUMNS = 4  # positive, negative, negated positive, negated negative valence


@dataclass(frozen=True, slots=True)
class Example:
    """One labeled text of the pool."""

    text: str
    label: int


def clean(text: str) -> str:
    """Undo the pool's escapes and make it look like TweetEval (handles become `@user`)."""
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return _HANDLE.sub("@user", text).strip()


def read_pool(semeval_dir: Path) -> list[Example]:
    """The subtask-A files in name order, cleaned, without duplicate texts (first one kept)."""
    seen: dict[str, Example] = {}
    for path in sorted(semeval_dir.glob("twitter-*-A.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[1] not in LABELS:
                continue
            text = clean(parts[2])
            seen.setdefault(text.lower(), Example(text, LABELS.index(parts[1])))
    return list(seen.values())


def is_holdout(example: Example) -> bool:
    """Whether an example is in the model-selection holdout (a stable hash of its text)."""
    digest = hashlib.sha1(example.text.lower().encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HOLDOUT_PERCENT


def vader_lexicon() -> dict[str, float]:
    """VADER's word valences, read from the installed vaderSentiment package."""
    try:
        text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text("utf-8")
    except ModuleNotFoundError:
        sys.exit("training needs the vaderSentiment package (pip install vaderSentiment)")
    lexicon: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            lexicon[parts[0]] = float(parts[1])
    return lexicon


def lexicon_features(lexicon: dict[str, float]) -> dict[str, tuple[int, float]]:
    """Feature -> (lexicon column, valence) for every entry that `features` can produce."""
    out: dict[str, tuple[int, float]] = {}
    for entry, valence in sorted(lexicon.items()):
        words = tokens(entry)
        if len(words) == 1 and valence:
            out[words[0]] = (0 if valence > 0 else 1, abs(valence))
            out[words[0] + NEGATED] = (2 if valence > 0 else 3, abs(valence))
        elif len(words) == 2 and valence:
            out[" ".join(words)] = (0 if valence > 0 else 1, abs(valence))
    for word, valence in sorted(NEGATED_ONLY.items()):
        out[word + NEGATED] = (2, valence)
    return out


def design(
    feats: Sequence[list[str]], vocab: dict[str, int], lex: dict[str, tuple[int, float]]
) -> sparse.csr_matrix:
    """Count matrix over `vocab` followed by the four lexicon columns."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    width = len(vocab)
    for i, doc in enumerate(feats):
        for f in doc:
            j = vocab.get(f)
            if j is not None:
                rows.append(i)
                cols.append(j)
                vals.append(1.0)
            hit = lex.get(f)
            if hit is not None:
                rows.append(i)
                cols.append(width + hit[0])
                vals.append(hit[1])
    shape = (len(feats), width + _LEX_COLUMNS)
    return sparse.csr_matrix((vals, (rows, cols)), shape=shape)


def fit_softmax(
    x: sparse.csr_matrix, y: NDArray[np.int64], c: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Balanced multinomial logistic regression: min 0.5|W|^2 + C * weighted log-loss."""
    n, d = x.shape
    k = len(LABELS)
    weight = n / (k * np.bincount(y, minlength=k).astype(np.float64))
    sample = weight[y]
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    xt = x.T.tocsr()

    def loss(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        w = theta[: d * k].reshape(d, k)
        z = x @ w + theta[d * k :]
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        data_loss = -float((sample * (logp * onehot).sum(axis=1)).sum())
        value = c * data_loss + 0.5 * float((w * w).sum())
        g = c * (np.exp(logp) - onehot) * sample[:, None]
        grad = np.concatenate([(xt @ g + w).ravel(), g.sum(axis=0)])
        return value, grad

    result = optimize.minimize(
        loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 3000}
    )
    theta: NDArray[np.float64] = result.x
    return theta[: d * k].reshape(d, k), theta[d * k :]


def fold(
    vocab: dict[str, int],
    lex: dict[str, tuple[int, float]],
    w: NDArray[np.float64],
    b: NDArray[np.float64],
) -> dict[str, object]:
    """The shipped document: lexicon weights folded into one table relative to neutral."""
    rel = w[:, [0, 2]] - w[:, [1]]
    lex_rel = rel[len(vocab) :]
    table: dict[str, list[float]] = {}
    for feat in sorted(set(vocab) | set(lex)):
        value = rel[vocab[feat]].copy() if feat in vocab else np.zeros(2)
        if feat in lex:
            column, valence = lex[feat]
            value += valence * lex_rel[column]
        rounded = [round(float(v), DIGITS) for v in value]
        if max(abs(v) for v in rounded) >= PRUNE:
            table[feat] = rounded
    bias = [round(float(b[0] - b[1]), DIGITS), round(float(b[2] - b[1]), DIGITS)]
    body = orjson.dumps({"bias": bias, "weights": table}, option=orjson.OPT_SORT_KEYS)
    return {
        "features_version": FEATURES_VERSION,
        "id": hashlib.sha256(body).hexdigest()[:16],
        "labels": list(LABELS),
        "bias": bias,
        "weights": table,
    }


def train(
    examples: Sequence[Example], lexicon: dict[str, float], c: float = DEFAULT_C
) -> dict[str, object]:
    """Fit on `examples` and return the model document."""
    feats = [features(e.text) for e in examples]
    df = Counter(f for doc in feats for f in set(doc))
    vocab = {f: i for i, f in enumerate(sorted(f for f, n in df.items() if n >= MIN_DF))}
    lex = lexicon_features(lexicon)
    w, b = fit_softmax(design(feats, vocab, lex), np.array([e.label for e in examples]), c)
    return fold(vocab, lex, w, b)


def to_model(doc: dict[str, object]) -> BaseWeights:
    """The weights of a model document, as the daemon would load them."""
    return parse_model(orjson.dumps(doc))


def evaluate(base: BaseWeights, examples: Iterable[Example]) -> tuple[float, float]:
    """Macro-averaged recall and negative-class F1 of the model on `examples`."""
    model = SentimentModel(base)
    confusion = np.zeros((3, 3))
    for e in examples:
        confusion[e.label, LABELS.index(model.predict_one(e.text).label)] += 1
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    precision = confusion[0, 0] / max(confusion[:, 0].sum(), 1)
    f1 = 2 * precision * recall[0] / max(precision + recall[0], 1e-12)
    return float(recall.mean()), float(f1)


def write_model(doc: dict[str, object], out: Path) -> None:
    """Gzipped JSON with a fixed header time, so the same training gives the same bytes."""
    raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train (optionally select C on the holdout first) and write the model."""
    parser = argparse.ArgumentParser(prog="python -m crisiswatch.enrich.train_sentiment")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--c", type=float, default=DEFAULT_C, help="inverse L2 strength")
    parser.add_argument("--select", action="store_true", help="report C candidates on holdout")
    args = parser.parse_args(argv)
    pool = read_pool(args.data / "semeval-2013-2016")
    if not pool:
        print(f"no SemEval files under {args.data}", file=sys.stderr)
        return 1
    lexicon = {**vader_lexicon(), **CURATED}
    if args.select:
        fit = [e for e in pool if not is_holdout(e)]
        held = [e for e in pool if is_holdout(e)]
        for c in (0.02, 0.05, 0.1, 0.2):
            recall, f1 = evaluate(to_model(train(fit, lexicon, c)), held)
            print(f"C={c:<5} holdout macro-recall {recall:.4f}  negative F1 {f1:.4f}")
    doc = train(pool, lexicon, args.c)
    write_model(doc, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(pool)} texts, {len(doc['weights'])} features, {size} bytes)")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
