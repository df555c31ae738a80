"""Sentiment of one mention: a compact linear model shipped in the package, plus online learning.

The base model is a weight table (feature -> logit of negative and of positive, neutral fixed at 0)
trained offline by `python -m crisiswatch.enrich.train_sentiment`. Scoring a text is one
regular-expression scan and two C-level sums of dictionary look-ups, one over tokens and bigrams,
one over token prefixes (each weight is one complex number, negative + positive*1j, so a single
look-up gives both logits). Feedback trains a
separate, per-deployment residual table on the same features (small learning rate, clipped
weights) whose logits are added to the base's; only that residual is checkpointed.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import chain, pairwise, repeat
from operator import itemgetter
from typing import Any

import orjson

LABELS = ("negative", "neutral", "positive")
FEATURES_VERSION = 3  # bump when features() changes: the shipped model must be retrained
STATE_VERSION = 1
MODEL_FILE = "sentiment_model.json.gz"
MAX_CHARS = 1000  # characters read of a text: a 10,000-character post costs no more than that
MAX_TOKENS = 200
NEGATION_SCOPE = 3  # tokens after a negator that are marked, unless punctuation ends the clause
NEGATED = "_N"
MAX_BALANCE = 5.0  # most a rare label's feedback is up-weighted online
PREFIX = 4  # every token also gives its first PREFIX characters as a feature
PREFIXED = "^"  # marks a prefix feature (never part of a token)

_PICTOGRAPHS = "\U0001f300-\U0001faff\u2600-\u27bf"
_SEPARATORS = (
    r"\s;:()\[\]{}\"/\\|<>=*~^`+#“”‘—–\u200d\ufe0f\U0001f3fb-\U0001f3ff.,!?…" + _PICTOGRAPHS
)
# An emoticon, a word (a run of characters that separate nothing), a punctuation mark or a
# pictograph; ":/" of "http://" is not an emoticon.
_TOKEN = re.compile(rf"<3|[:;]'?-?[()dp]|:/(?!/)|[^{_SEPARATORS}]+|[.,!?…]|[{_PICTOGRAPHS}]")
_NEGATED_VERBS = (
    "do", "does", "did", "is", "are", "was", "were", "wo", "would", "ca", "could", "should",
    "have", "has", "had", "must", "need",
)  # fmt: skip
_NEGATORS = frozenset(
    {"not", "no", "never", "nothing", "nobody", "none", "nor", "neither", "nowhere", "cannot",
     "without", "ain't", "aint"}
    | {verb + end for verb in _NEGATED_VERBS for end in ("n't", "nt")}
)  # fmt: skip
_CLAUSE_END = frozenset(".,!?…")
_PREFIX = itemgetter(slice(PREFIX))
_PAIR = " ".join
_MARK_PREFIX = PREFIXED.__add__
_ZEROS = repeat(0j)


def tokens(text: str) -> list[str]:
    """Lowercased words, punctuation marks, emoticons and emoji of `text`, capped in length."""
    words = _TOKEN.findall(text[:MAX_CHARS].lower().replace("’", "'"))
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


def _words_and_pairs(words: list[str]) -> Iterator[str]:
    marked = words if _NEGATORS.isdisjoint(words) else _mark_negation(words)
    return chain(marked, map(_PAIR, pairwise(words)))


def features(text: str) -> list[str]:
    """Features of a text: its tokens (negation-marked), bigrams, and prefixes (PREFIXED)."""
    words = tokens(text)
    return [*_words_and_pairs(words), *map(_MARK_PREFIX, map(_PREFIX, words))]


@dataclass(frozen=True, slots=True)
class SentimentScore:
    """The most likely label of a text and its probability of being negative."""

    label: str
    negative: float


@dataclass(frozen=True, slots=True)
class BaseWeights:
    """The shipped weights: feature -> complex(logit of negative, logit of positive).

    Both logits are relative to neutral's, which is fixed at 0. Prefix features are in their own
    table, keyed without their PREFIXED mark.
    """

    model_id: str
    bias: complex
    table: dict[str, complex]
    prefixes: dict[str, complex]


def parse_model(raw: bytes) -> BaseWeights:
    """Read a model file's (gunzipped) JSON; refuse one made for other features."""
    doc: dict[str, Any] = orjson.loads(raw)
    if doc.get("features_version") != FEATURES_VERSION:
        raise ValueError(f"model built for features v{doc.get('features_version')}")
    weights: list[tuple[str, float, float]] = doc["weights"]
    return BaseWeights(
        model_id=str(doc["id"]),
        bias=complex(doc["bias"][0], doc["bias"][1]),
        table={f: complex(neg, pos) for f, neg, pos in weights if f[0] != PREFIXED},
        prefixes={f[1:]: complex(neg, pos) for f, neg, pos in weights if f[0] == PREFIXED},
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
        self._table = base.table  # base + residual, both copied on the first learn_one
        self._prefixes = base.prefixes
        self._bias = base.bias

    @classmethod
    def load_default(cls) -> SentimentModel:
        """A model with the shipped weights and nothing learned yet."""
        return cls(default_weights())

    def logits(self, text: str) -> complex:
        """Logits of negative (real part) and positive (imaginary part), relative to neutral."""
        words = tokens(text)
        return (
            self._bias
            + sum(map(self._table.get, _words_and_pairs(words), _ZEROS))
            + sum(map(self._prefixes.get, map(_PREFIX, words), _ZEROS))
        )

    def negative_one(self, text: str) -> float:
        """P(negative) of `text`."""
        z = self.logits(text)
        return _softmax_negative(z.real, z.imag)

    def predict_one(self, text: str) -> SentimentScore:
        """The most likely label and P(negative)."""
        z = self.logits(text)
        zn, zp = z.real, z.imag
        label = "negative" if zn >= zp and zn >= 0.0 else ("positive" if zp > 0.0 else "neutral")
        return SentimentScore(label, _softmax_negative(zn, zp))

    def learn_one(self, text: str, label: str) -> None:
        """Move the residual towards `label` for this text."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, not {label!r}")
        feats = features(text)
        z = self.logits(text)
        index = LABELS.index(label)
        self._counts[index] += 1
        balance = min(MAX_BALANCE, sum(self._counts) / (len(LABELS) * self._counts[index]))
        step = self.learning_rate * balance / math.sqrt(len(feats) + 1)
        gn = step * ((index == 0) - _softmax_negative(z.real, z.imag))
        gp = step * ((index == 2) - _softmax_negative(z.imag, z.real))
        self._own_tables()
        for feat in feats:
            self._update(feat, gn, gp)
        self._residual_bias = [self._clipped(self._residual_bias[0] + gn),
                               self._clipped(self._residual_bias[1] + gp)]  # fmt: skip
        self._sync_bias()

    def _own_tables(self) -> None:
        if self._table is self.base.table:
            self._table = dict(self.base.table)
            self._prefixes = dict(self.base.prefixes)

    def _sync_bias(self) -> None:
        self._bias = self.base.bias + complex(*self._residual_bias)

    def _clipped(self, weight: float) -> float:
        return min(self.clip, max(-self.clip, weight))

    def _update(self, feat: str, gn: float, gp: float) -> None:
        res = self._residual.setdefault(feat, [0.0, 0.0])
        res[0] = self._clipped(res[0] + gn)
        res[1] = self._clipped(res[1] + gp)
        self._set(feat, res)

    def _set(self, feat: str, res: list[float]) -> None:
        if feat[0] == PREFIXED:
            prefix = feat[1:]
            self._prefixes[prefix] = self.base.prefixes.get(prefix, 0j) + complex(res[0], res[1])
        else:
            self._table[feat] = self.base.table.get(feat, 0j) + complex(res[0], res[1])

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
