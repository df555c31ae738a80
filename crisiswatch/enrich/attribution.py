"""Which brand (and which of its topics) a mention is about, by the brand queries in the config.

Every source shares these queries, so a mention is attributed the same way wherever it came from.
All terms of all brands live in one index: a mention's tokens are looked up once each, and a
phrase is only checked when its first word is present, so the cost does not grow with the number
of brands.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from crisiswatch.config import Brand
from crisiswatch.domain import Mention

_TOKEN = re.compile(r"[#@]?\w+")  # linear: no nested quantifiers
MAX_TOKENS = 400  # tokens read of a post; a 10,000-character post costs no more than that


def tokenize(text: str) -> list[str]:
    """Lowercase word, #hashtag and @handle tokens of a text, at most `MAX_TOKENS`."""
    tokens = _TOKEN.findall(text.lower(), 0, MAX_TOKENS * 12)
    return tokens[:MAX_TOKENS]


@dataclass(frozen=True, slots=True)
class Attribution:
    brand: str
    topics: tuple[str, ...]


_KEYWORD = "+"  # the kind of an index entry that attributes a mention to a brand
_EXCLUSION = "-"  # the kind of an entry that rules a mention out for a brand


class Attributor:
    """Attributes mentions to the configured brands and tags them with their topics."""

    def __init__(self, brands: Sequence[Brand]) -> None:
        self._brands = {brand.id: brand for brand in brands}
        # term -> (brand, kind); kind is _KEYWORD, _EXCLUSION or a topic name
        self._words: dict[str, list[tuple[str, str]]] = defaultdict(list)
        # first word -> (phrase padded with spaces, brand, kind)
        self._phrases: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for brand in brands:
            for term in (*brand.keywords, *brand.hashtags, *brand.handles):
                self._add(term, brand.id, _KEYWORD)
            for term in brand.exclusions:
                self._add(term, brand.id, _EXCLUSION)
            for topic, terms in brand.topics.items():
                for term in terms:
                    self._add(term, brand.id, topic)

    def _add(self, term: str, brand: str, kind: str) -> None:
        words = tokenize(term)
        if not words:
            return
        if len(words) > 1:
            self._phrases[words[0]].append((f" {' '.join(words)} ", brand, kind))
            return
        word = words[0]
        self._words[word].append((brand, kind))
        if word[0] not in "#@" and not word.endswith("s"):
            self._words[word + "s"].append((brand, kind))  # "card" also finds "cards"

    def attribute(self, mention: Mention, tokens: Sequence[str]) -> list[Attribution]:
        """The brands the mention is about (usually one), each with its topics."""
        hits = self._hits(tokens)
        if mention.brand is not None:
            if mention.brand not in self._brands:
                return []
            hits[mention.brand].add(_KEYWORD)
        found = []
        for brand_id, kinds in sorted(hits.items()):
            if _KEYWORD not in kinds or (_EXCLUSION in kinds and mention.brand is None):
                continue
            languages = self._brands[brand_id].languages
            if languages and mention.lang is not None and mention.lang not in languages:
                continue
            topics = tuple(sorted(k for k in kinds if k not in (_KEYWORD, _EXCLUSION)))
            found.append(Attribution(brand_id, topics))
        return found

    def _hits(self, tokens: Sequence[str]) -> dict[str, set[str]]:
        hits: dict[str, set[str]] = defaultdict(set)
        joined: str | None = None
        for token in set(tokens):
            for brand, kind in self._words.get(token, ()):
                hits[brand].add(kind)
            if token[0] in "#@":
                for brand, kind in self._words.get(token[1:], ()):
                    hits[brand].add(kind)
            for phrase, brand, kind in self._phrases.get(token, ()):
                if joined is None:
                    joined = f" {' '.join(tokens)} "
                if phrase in joined:
                    hits[brand].add(kind)
        return hits
