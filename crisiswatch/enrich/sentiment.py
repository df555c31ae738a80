"""Sentiment of one mention: a compact linear model shipped in the package, plus online learning.

The base model is a weight table (feature -> logit of negative and of positive, neutral fixed at 0)
trained offline by `python -m crisiswatch.enrich.train_sentiment`. Scoring a text is a handful of
string operations and two C-level sums of dictionary look-ups. Feedback trains a separate,
per-deployment residual table on the same features (small learning rate, clipped weights) whose
logits are added to the base's; only that residual is checkpointed.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import pairwise, repeat
from typing import Any

import orjson

LABELS = ("negative", "neutral", "positive")
FEATURES_VERSION = 1  # bump when features() changes: the shipped model must be retrained
STATE_VERSION = 1
MODEL_FILE = "sentiment_model.json.gz"
MAX_CHARS = 1000  # characters read of a text: a 10,000-character post costs no more than that
MAX_TOKENS = 200
NEGATION_SCOPE = 3  # tokens after a negator that are marked, unless punctuation ends the clause
NEGATED = "_N"
MAX_BALANCE = 5.0  # most a rare label's feedback is up-weighted online
PREFIX = 4  # words longer than this also give their first PREFIX characters as a feature

_SPACED = ".,!?"
_DROPPED = ' \t\n\r;:()[]{}"/\\|<>=*~^`+#“”‘—–\u200d\ufe0f'
_EMOTICONS = {
    ":-)": " emo_smile ", ":)": " emo_smile ", ";)": " emo_smile ", ":-d": " emo_smile ",
    ":d": " emo_smile ", "<3": " emo_heart ", ":'(": " emo_sad ", ":-(": " emo_sad ",
    ":(": " emo_sad ", ":/": " emo_sad ",
}  # fmt: skip
_NEGATED_VERBS = (
    "do", "does", "did", "is", "are", "was", "were", "wo", "would", "ca", "could", "should",
    "have", "has", "had", "must", "need",
)  # fmt: skip
_NEGATORS = frozenset(
    {"not", "no", "never", "nothing", "nobody", "none", "nor", "neither", "nowhere", "cannot",
     "without", "ain't", "aint"}
    | {verb + end for verb in _NEGATED_VERBS for end in ("n't", "nt")}
)  # fmt: skip
_CLAUSE_END = frozenset(_SPACED + "…")
_ZEROS = repeat(0.0)


def _translation() -> dict[int, str]:
    table: dict[int, str] = {ord(c): " " for c in _DROPPED}
    table.update({ord(c): f" {c} " for c in _SPACED})
    table[ord("…")] = " . . . "
    table[ord("’")] = "'"
    pictographs = [*range(0x1F300, 0x1FB00), *range(0x2600, 0x27C0)]
    table.update({cp: f" {chr(cp)} " for cp in pictographs})
    table.update({cp: " " for cp in range(0x1F3FB, 0x1F400)})  # skin-tone modifiers
    return table


_TABLE = _translation()


def tokens(text: str) -> list[str]:
    """Lowercased words, punctuation marks, emoticons and emoji of `text`, capped in length."""
    text = text[:MAX_CHARS].lower()
    if ":" in text or ";" in text or "<3" in text:
        for emoticon, word in _EMOTICONS.items():
            text = text.replace(emoticon, word)
    words = text.translate(_TABLE).split()
    del words[MAX_TOKENS:]
    return words


def _mark_negation(words: list[str]) -> list[str]:
    marked: list[str] = []
    scope = 0
    for word in words:
        if word in _CLAUSE_END:
            scope = 0
            marked.append(word)
        elif scope:
            marked.append(word + NEGATED)
            scope -= 1
        else:
            marked.append(word)
        if word in _NEGATORS:
            scope = NEGATION_SCOPE
    return marked


def features(text: str) -> list[str]:
    """Features of a text: words (negation-marked), word bigrams and word prefixes."""
    words = tokens(text)
    marked = words if _NEGATORS.isdisjoint(words) else _mark_negation(words)
    out = marked + [a + " " + b for a, b in pairwise(words)]
    out += ["^" + w[:PREFIX] for w in words if len(w) > PREFIX]
    return out


@dataclass(frozen=True, slots=True)
class SentimentScore:
    """The most likely label of a text and its probability of being negative."""

    label: str
    negative: float


@dataclass(frozen=True, slots=True)
class BaseWeights:
    """The shipped weight table: logits of negative and positive relative to neutral."""

    model_id: str
    bias: tuple[float, float]
    negative: dict[str, float]
    positive: dict[str, float]


def parse_model(raw: bytes) -> BaseWeights:
    """Read a model file's (gunzipped) JSON; refuse one made for other features."""
    doc: dict[str, Any] = orjson.loads(raw)
    if doc.get("features_version") != FEATURES_VERSION:
        raise ValueError(f"model built for features v{doc.get('features_version')}")
    table: dict[str, list[float]] = doc["weights"]
    return BaseWeights(
        model_id=str(doc["id"]),
        bias=(float(doc["bias"][0]), float(doc["bias"][1])),
        negative={f: w[0] for f, w in table.items() if w[0]},
        positive={f: w[1] for f, w in table.items() if w[1]},
    )


@cache
def default_weights() -> BaseWeights:
    """The model that ships inside the package (read once per process)."""
    data = resources.files("crisiswatch.enrich").joinpath(MODEL_FILE).read_bytes()
    return parse_model(gzip.decompress(data))


def _softmax_negative(zn: float, zp: float) -> float:
    top = max(zn, zp, 0.0)
    en = math.exp(zn - top)
    return en / (en + math.exp(-top) + math.exp(zp - top))


class SentimentModel:
    """Base weights plus an online residual; `negative_one` is the hot path.

    `learn_one` takes a gradient step of the residual's log-loss with rate `learning_rate`,
    divided by the square root of the text's feature count and weighted so that each label counts
    as much as the others however skewed the feedback is; each weight is clipped to `clip`.
    """

    def __init__(self, base: BaseWeights, learning_rate: float = 0.1, clip: float = 3.0) -> None:
        self.base = base
        self.learning_rate = learning_rate
        self.clip = clip
        self._residual: dict[str, list[float]] = {}
        self._residual_bias = [0.0, 0.0]
        self._counts = [0, 0, 0]  # labels learned so far, to weigh classes evenly
        self._negative = base.negative  # base + residual, copied on the first learn_one
        self._positive = base.positive
        self._bias = base.bias

    @classmethod
    def load_default(cls) -> SentimentModel:
        """A model with the shipped weights and nothing learned yet."""
        return cls(default_weights())

    def _logits(self, feats: list[str]) -> tuple[float, float]:
        zn = self._bias[0] + sum(map(self._negative.get, feats, _ZEROS))
        zp = self._bias[1] + sum(map(self._positive.get, feats, _ZEROS))
        return zn, zp

    def negative_one(self, text: str) -> float:
        """P(negative) of `text`."""
        return _softmax_negative(*self._logits(features(text)))

    def predict_one(self, text: str) -> SentimentScore:
        """The most likely label and P(negative)."""
        zn, zp = self._logits(features(text))
        label = "negative" if zn >= zp and zn >= 0.0 else ("positive" if zp > 0.0 else "neutral")
        return SentimentScore(label, _softmax_negative(zn, zp))

    def learn_one(self, text: str, label: str) -> None:
        """Move the residual towards `label` for this text."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, not {label!r}")
        feats = features(text)
        zn, zp = self._logits(feats)
        index = LABELS.index(label)
        self._counts[index] += 1
        balance = min(MAX_BALANCE, sum(self._counts) / (len(LABELS) * self._counts[index]))
        step = self.learning_rate * balance / math.sqrt(len(feats) + 1)
        gn = step * ((index == 0) - _softmax_negative(zn, zp))
        gp = step * ((index == 2) - _softmax_negative(zp, zn))
        self._own_tables()
        for feat in feats:
            self._update(feat, gn, gp)
        self._residual_bias = [self._clipped(self._residual_bias[0] + gn),
                               self._clipped(self._residual_bias[1] + gp)]  # fmt: skip
        self._sync_bias()

    def _own_tables(self) -> None:
        if self._negative is self.base.negative:
            self._negative = dict(self.base.negative)
            self._positive = dict(self.base.positive)

    def _sync_bias(self) -> None:
        res = self._residual_bias
        self._bias = (self.base.bias[0] + res[0], self.base.bias[1] + res[1])

    def _clipped(self, weight: float) -> float:
        return min(self.clip, max(-self.clip, weight))

    def _update(self, feat: str, gn: float, gp: float) -> None:
        res = self._residual.setdefault(feat, [0.0, 0.0])
        res[0] = self._clipped(res[0] + gn)
        res[1] = self._clipped(res[1] + gp)
        self._set(feat, res)

    def _set(self, feat: str, res: list[float]) -> None:
        self._negative[feat] = self.base.negative.get(feat, 0.0) + res[0]
        self._positive[feat] = self.base.positive.get(feat, 0.0) + res[1]

    def state(self) -> bytes:
        """A checkpoint of what was learned online (the base comes from the package)."""
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "features_version": FEATURES_VERSION,
                "base": self.base.model_id,
                "learning_rate": self.learning_rate,
                "clip": self.clip,
                "bias": self._residual_bias,
                "counts": self._counts,
                "residual": self._residual,
            }
        )

    @classmethod
    def from_state(cls, data: bytes) -> SentimentModel:
        """Rebuild a model from `state()` on top of the shipped base weights."""
        doc: dict[str, Any] = orjson.loads(data)
        if doc.get("version") != STATE_VERSION or doc.get("features_version") != FEATURES_VERSION:
            raise ValueError("sentiment checkpoint from an incompatible version")
        model = cls(default_weights(), float(doc["learning_rate"]), float(doc["clip"]))
        residual: dict[str, list[float]] = doc["residual"]
        if residual:
            model._own_tables()
        for feat, res in residual.items():
            model._residual[feat] = [float(res[0]), float(res[1])]
            model._set(feat, model._residual[feat])
        model._counts = [int(n) for n in doc["counts"]]
        model._residual_bias = [float(b) for b in doc["bias"]]
        model._sync_bias()
        return model

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (SentimentModel.from_state, (self.state(),))
