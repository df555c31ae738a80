"""Train the shipped sentiment model from the SemEval 2013-2016 pool (offline, deterministic).

    python -m crisiswatch.enrich.train_sentiment [--data ../shared/data] [--out PATH] [--select]

Learner: multinomial logistic regression with balanced class weights and L2 regularisation,
solved with L-BFGS, on the features of `crisiswatch.enrich.sentiment.features` plus four lexicon
columns (summed positive and negative valence, inside and outside negation scope) from VADER's
lexicon (MIT licence; needs the vaderSentiment package) and a curated complaint/emoji lexicon.
Two more views are added to the regression's weights, each with a mix chosen on the hold-out:
naive Bayes (log-ratios of each feature's presence per label) and NBSVM (per label, one-vs-rest
logistic regression on the features scaled by that label's naive Bayes log-ratio, which makes
words that the counts already call polar cheaper to use). Every view and every lexicon column is
linear in the features, so all of it folds into one table: (negative, positive) logits per
feature, relative to neutral. The pool's most recent file (SemEval-2016's test tweets, the nearest
in time to TweetEval's 2017 test) is the hold-out: models fitted on the rest pick the
regularisation (`--select`), the naive Bayes mix, then the NBSVM mix, and two class offsets added
to the bias that maximise
macro-averaged recall there without lowering negative-class F1 (newer tweets carry fewer known
words, so a balanced model calls too many of them neutral). The shipped model is then fitted on
the whole pool with those choices. TweetEval's test set is never read here.
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
HOLDOUT_FILE = "twitter-2016test-A.txt"
NB_SMOOTHING = 0.5  # added to every feature's count per label
NB_MIXES = (0.0, 0.05, 0.1, 0.2)  # weights of the naive Bayes view tried on the hold-out
NBSVM_C = 0.025  # inverse L2 strength of the NBSVM view's one-vs-rest regressions
NBSVM_MIXES = (0.0, 0.25, 0.5, 1.0)  # weights of the NBSVM view tried on the hold-out
OFFSETS = np.round(np.arange(-1.0, 1.0001, 0.05), 2)  # class offsets tried on the hold-out
PRUNE = 0.002  # features whose two logits are both smaller than this are left out
DIGITS = 4

# Curated valences on VADER's -4..4 scale: complaint vocabulary that VADER lacks and emoji (absent
# from the ASCII-only SemEval pool).
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
    held_out: bool = False  # from HOLDOUT_FILE


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
            example = Example(text, LABELS.index(parts[1]), path.name == HOLDOUT_FILE)
            seen.setdefault(text.lower(), example)
    return list(seen.values())


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
    x: sparse.csr_matrix, y: NDArray[np.int64], c: float, k: int = len(LABELS)
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Balanced multinomial logistic regression over classes 0..k-1: min 0.5|W|^2 + C * weighted
    log-loss."""
    n, d = x.shape
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


@dataclass(frozen=True, slots=True)
class Fitted:
    """The two linear views of one training set, before they are folded into one table."""

    vocab: dict[str, int]
    lex: dict[str, tuple[int, float]]
    w: NDArray[np.float64]  # logistic regression, (features + lexicon columns) x labels
    b: NDArray[np.float64]
    nb: NDArray[np.float64]  # naive Bayes log-ratios (negative, positive) / neutral per feature
    svm: NDArray[np.float64]  # NBSVM (negative, positive) - neutral, (features + lexicon) x 2
    svm_b: NDArray[np.float64]
    df: Counter[str]


def presence(x: sparse.csr_matrix, y: NDArray[np.int64], width: int) -> NDArray[np.float64]:
    """Per feature column and label, the smoothed number of texts of that label that have it."""
    present = (x[:, :width] > 0).astype(np.float64)
    counts: NDArray[np.float64] = present.T @ np.eye(len(LABELS))[y] + NB_SMOOTHING
    return counts


def naive_bayes(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Bernoulli-style naive Bayes log-ratios of negative and positive to neutral, per column."""
    logp = np.log(counts / counts.sum(axis=0))
    ratios: NDArray[np.float64] = logp[:, [0, 2]] - logp[:, [1]]
    return ratios


def nbsvm(
    x: sparse.csr_matrix, y: NDArray[np.int64], counts: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """NBSVM view: per label, balanced logistic regression of that label against the rest on the
    columns scaled by the label's naive Bayes log-ratio against the rest (lexicon columns
    unscaled). Returns weights and bias of (negative, positive) scores minus neutral's."""
    scores = np.zeros((x.shape[1], len(LABELS)))
    bias = np.zeros(len(LABELS))
    for label in range(len(LABELS)):
        own, rest = counts[:, label], counts.sum(axis=1) - counts[:, label]
        ratio = np.log(own / own.sum()) - np.log(rest / rest.sum())
        scale = np.concatenate([ratio, np.ones(x.shape[1] - len(ratio))])
        w, b = fit_softmax(x @ sparse.diags(scale), (y == label).astype(np.int64), NBSVM_C, k=2)
        scores[:, label] = scale * (w[:, 1] - w[:, 0])
        bias[label] = b[1] - b[0]
    return scores[:, [0, 2]] - scores[:, [1]], bias[[0, 2]] - bias[1]


def fit(examples: Sequence[Example], lexicon: dict[str, float], c: float) -> Fitted:
    """Fit both views on `examples`."""
    feats = [features(e.text) for e in examples]
    df = Counter(f for doc in feats for f in set(doc))
    vocab = {f: i for i, f in enumerate(sorted(f for f, n in df.items() if n >= MIN_DF))}
    lex = lexicon_features(lexicon)
    x, y = design(feats, vocab, lex), np.array([e.label for e in examples])
    w, b = fit_softmax(x, y, c)
    counts = presence(x, y, len(vocab))
    svm, svm_b = nbsvm(x, y, counts)
    return Fitted(vocab, lex, w, b, naive_bayes(counts), svm, svm_b, df)


def fold(
    fitted: Fitted, mix: tuple[float, float], offsets: tuple[float, float]
) -> dict[str, object]:
    """The shipped document: logistic regression plus `mix` times (naive Bayes, NBSVM), lexicon
    folded in.

    One table of logits relative to neutral, features most frequent first (so the daemon's table
    keeps its hot entries together), `offsets` added to the two biases.
    """
    vocab, lex = fitted.vocab, fitted.lex
    rel = fitted.w[:, [0, 2]] - fitted.w[:, [1]] + mix[1] * fitted.svm
    lex_rel = rel[len(vocab) :]
    rel = rel[: len(vocab)] + mix[0] * fitted.nb
    table: list[list[object]] = []
    for feat in sorted(set(vocab) | set(lex), key=lambda f: (-fitted.df[f], f)):
        value = rel[vocab[feat]].copy() if feat in vocab else np.zeros(2)
        if feat in lex:
            column, valence = lex[feat]
            value += valence * lex_rel[column]
        rounded = [round(float(v), DIGITS) for v in value]
        if max(abs(v) for v in rounded) >= PRUNE:
            table.append([feat, *rounded])
    b = fitted.b[[0, 2]] - fitted.b[1] + mix[1] * fitted.svm_b + np.array(offsets)
    bias = [round(float(v), DIGITS) for v in b]
    body = orjson.dumps({"bias": bias, "weights": table})
    return {
        "features_version": FEATURES_VERSION,
        "id": hashlib.sha256(body).hexdigest()[:16],
        "labels": list(LABELS),
        "bias": bias,
        "weights": table,
    }


def train(
    examples: Sequence[Example],
    lexicon: dict[str, float],
    c: float = DEFAULT_C,
    mix: tuple[float, float] = (0.0, 0.0),
    offsets: tuple[float, float] = (0.0, 0.0),
) -> dict[str, object]:
    """Fit on `examples` and return the model document."""
    return fold(fit(examples, lexicon, c), mix, offsets)


def to_model(doc: dict[str, object]) -> BaseWeights:
    """The weights of a model document, as the daemon would load them."""
    return parse_model(orjson.dumps(doc))


def logits(base: BaseWeights, examples: Sequence[Example]) -> NDArray[np.float64]:
    """Per example, the logits of (negative, neutral, positive) with neutral's at 0."""
    model = SentimentModel(base)
    z = np.zeros((len(examples), len(LABELS)))
    for i, e in enumerate(examples):
        total = model.logits(e.text)
        z[i, 0], z[i, 2] = total.real, total.imag
    return z


def _quality(z: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[float, float]:
    """Macro-averaged recall and negative F1 of argmax decisions (ties as in predict_one)."""
    predicted = z.argmax(axis=1)
    hits = predicted == y
    recall = float(np.mean([hits[y == k].mean() for k in range(len(LABELS))]))
    flagged = predicted == 0
    true_positive = float((flagged & (y == 0)).sum())
    f1 = 2 * true_positive / max(float(flagged.sum() + (y == 0).sum()), 1.0)
    return recall, f1


def calibrate(base: BaseWeights, examples: Sequence[Example]) -> tuple[float, float]:
    """The (negative, positive) bias offsets from OFFSETS with the best macro-recall.

    Only offsets that keep the negative class's F1 at least as high are candidates (both are
    targets, and trading negative precision for recall would page more falsely); ties go to the
    smallest total shift.
    """
    z, y = logits(base, examples), np.array([e.label for e in examples])
    floor = _quality(z, y)[1]
    best, best_key = (0.0, 0.0), (_quality(z, y)[0], 0.0)
    for dn in OFFSETS:
        for dp in OFFSETS:
            recall, f1 = _quality(z + np.array([dn, 0.0, dp]), y)
            key = (recall, -abs(float(dn)) - abs(float(dp)))
            if f1 >= floor and key > best_key:
                best, best_key = (float(dn), float(dp)), key
    return best


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
    """Command line: (optionally compare C on the hold-out,) calibrate, train, write the model."""
    parser = argparse.ArgumentParser(prog="python -m crisiswatch.enrich.train_sentiment")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--c", type=float, default=DEFAULT_C, help="inverse L2 strength")
    parser.add_argument("--select", action="store_true", help="report C candidates on holdout")
    args = parser.parse_args(argv)
    pool = read_pool(args.data / "semeval-2013-2016")
    early = [e for e in pool if not e.held_out]
    held = [e for e in pool if e.held_out]
    y = np.array([e.label for e in held])
    if not early or not held:
        print(f"no SemEval files (or no {HOLDOUT_FILE}) under {args.data}", file=sys.stderr)
        return 1
    lexicon = {**vader_lexicon(), **CURATED}
    for c in (0.01, 0.02, 0.04) if args.select else ():
        recall, f1 = evaluate(to_model(train(early, lexicon, c)), held)
        print(f"C={c:<5} holdout macro-recall {recall:.4f}  negative F1 {f1:.4f}")
    fitted = fit(early, lexicon, args.c)

    def pick(candidates: Iterable[tuple[float, float]]) -> tuple[float, float]:
        """The mix whose model, after its own calibrated offsets, has the best holdout
        macro-recall (ties to the smaller mix); prints each."""
        best: tuple[float, float, tuple[float, float]] | None = None
        for m in candidates:
            base = to_model(fold(fitted, m, (0.0, 0.0)))
            dn, dp = calibrate(base, held)
            recall, f1 = _quality(logits(base, held) + np.array([dn, 0.0, dp]), y)
            print(f"mix (naive Bayes, NBSVM) {m}, offsets {(dn, dp)}: holdout macro-recall"
                  f" {recall:.4f}  negative F1 {f1:.4f}")  # fmt: skip
            if best is None or (recall, -sum(m)) > best[:2]:
                best = (recall, -sum(m), m)
        assert best is not None
        return best[2]

    nb_mix = pick((m, 0.0) for m in NB_MIXES)[0]
    mix = pick((nb_mix, m) for m in NBSVM_MIXES)
    offsets = calibrate(to_model(fold(fitted, mix, (0.0, 0.0))), held)
    print(f"chosen: mix {mix}, offsets {offsets}")
    doc = train(pool, lexicon, args.c, mix, offsets)
    write_model(doc, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(pool)} texts, {len(doc['weights'])} features, {size} bytes)")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
