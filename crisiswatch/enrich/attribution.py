"""Which brand (and which of its topics) a mention is about, by the brand queries in the config.

Every source shares these queries, so a mention is attributed the same way wherever it came from.
All terms of all brands live in one `TermIndex`: a mention's tokens are looked up once each, and a
phrase is only checked when its first word is present, so the cost does not grow with the number
of brands.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Generic, NamedTuple, TypeVar

from crisiswatch.config import Brand
from crisiswatch.domain import Mention

BREAKS = frozenset(".,;:!?…")  # sentence and list punctuation: a phrase does not span it
# Word characters: \w, plus the combining marks it leaves out, which scripts such as Devanagari,
# Thai or Khmer write inside words (without them "กสิกร" would be two tokens).
_LETTER = "\\w\u0300-\u036f\u0900-\u0dff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
# A word, #hashtag or @handle, or a break: one of BREAKS not followed by a letter (the "." of
# "booking.com" or "j.p." is inside a name). Linear: no nested quantifiers.
_TOKEN = re.compile(rf"[#@]?[{_LETTER}]+|[{re.escape(''.join(sorted(BREAKS)))}](?![{_LETTER}])")
MAX_CHARS = 10_000  # characters read of a post: a mention's text is capped at this anyway
MAX_TOKENS = 2_000  # tokens kept: a long post's words (~1,700), not 5,000 one-letter ones
# Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Myanmar, Khmer): a
# token is a whole run of them, so a term in them is found inside tokens, not as one.
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)
V = TypeVar("V", bound=Hashable)


def tokenize(text: str) -> list[str]:
    """Lowercase word, #hashtag and @handle tokens of a text, with the punctuation (`BREAKS`)
    between them. Compatibility forms are folded first (NFKC: 𝐊𝐞𝐬𝐭𝐫𝐞𝐥, Ｋｅｓｔｒｅｌ and a
    decomposed é read as plain letters; a no-op costing tens of nanoseconds on ASCII)."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text[:MAX_CHARS]).lower())
    del tokens[MAX_TOKENS:]
    return tokens


def _plural(word: str) -> str:
    """The regular English plural: card → cards, branch → branches, fee → fees."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


class TermIndex(Generic[V]):
    """Whole-word terms and phrases, each pointing at values, found in one pass over the tokens.

    A single word also finds its plural ("card" finds "cards") unless added with
    `plurals=False` (a brand's name: "target" must not find "targets"), and a bare word finds
    its #hashtag and @handle forms ("kestrelbank" finds "#kestrelbank"): every form is a key of
    its own, so finding is one C-level set intersection with the tokens. A phrase is found only
    within a sentence or list item ("kestrel bank" is not in "a kestrel. Bank holiday"). A term
    in a script written without spaces ("トヨタ") is found inside the post's text ("トヨタの車が
    壊れた"); when such terms are configured, each post is looked at for such characters.
    """

    def __init__(self) -> None:
        self._words: dict[str, list[V]] = defaultdict(list)
        self._word_keys: set[str] = set()
        self._phrases: dict[str, list[tuple[str, V]]] = defaultdict(list)  # first word -> …
        self._phrase_keys: set[str] = set()
        self._unspaced: list[tuple[str, V]] = []  # terms found inside tokens

    def add(self, term: str, value: V, *, plurals: bool = True) -> None:
        """Index a term, spelt with its breaks and without them ("Mr. Cooper" is found in
        "Mr. Cooper foreclosed" and in "mr cooper"; "Yahoo!" in "yahoo is down")."""
        words = tokenize(term)
        for spelling in dict.fromkeys((tuple(words), tuple(w for w in words if w not in BREAKS))):
            if not BREAKS.issuperset(spelling):  # punctuation alone would match every post
                self._add_words(list(spelling), value, plurals)

    def _add_words(self, words: list[str], value: V, plurals: bool) -> None:
        if not words:
            return
        if any(_UNSPACED.search(word) for word in words):
            self._unspaced.append((" ".join(words), value))
            return
        if len(words) > 1:
            self._phrases[words[0]].append((f" {' '.join(words)} ", value))
            self._phrase_keys.add(words[0])
            return
        word = words[0]
        forms = [word] if word[0] in "#@" or not plurals else [word, _plural(word)]
        for form in forms:
            keys = [form] if form[0] in "#@" else [form, "#" + form, "@" + form]
            for key in keys:
                self._words[key].append(value)
                self._word_keys.add(key)

    def __bool__(self) -> bool:
        return bool(self._words or self._phrases or self._unspaced)

    def find(self, tokens: Sequence[str]) -> set[V]:
        """Every value whose term occurs in `tokens`."""
        found: set[V] = set()
        for key in self._word_keys.intersection(tokens):
            found.update(self._words[key])
        firsts = self._phrase_keys.intersection(tokens) if self._phrase_keys else ()
        joined = f" {' '.join(tokens)} " if firsts or self._unspaced else ""
        for first in firsts:
            found.update(value for phrase, value in self._phrases[first] if phrase in joined)
        if self._unspaced and _UNSPACED.search(joined):
            found.update(value for term, value in self._unspaced if term in joined)
        return found


class Attribution(NamedTuple):
    """One brand a mention is about (a named tuple: made for every mention, so made cheaply)."""

    brand: str
    topics: tuple[str, ...]
    replies_to_brand: bool = False  # a reply to one of the brand's own posts


_EXCLUSION = "-"  # the kind of an entry that rules a mention out for its brand (not a topic)


class Attributor:
    """Attributes mentions to the configured brands and tags them with their topics.

    One index over every brand's names finds the brands a mention names; only those brands'
    own indexes of exclusions and topics are then looked at, so topic words that every brand
    shares cost nothing for the brands a mention does not name.
    """

    def __init__(self, brands: Sequence[Brand]) -> None:
        self._brands = {brand.id: brand for brand in brands}
        self._handles = {b.id: frozenset(h.lower() for h in b.handles) for b in brands}
        self._handle_brands: dict[str, set[str]] = defaultdict(set)  # "@handle" -> brand ids
        self._names: TermIndex[str] = TermIndex()  # keywords, hashtags, handles -> brand id
        self._details: dict[str, TermIndex[str]] = {}  # brand -> exclusions (_EXCLUSION), topics
        for brand in brands:
            for handle in self._handles[brand.id]:
                self._handle_brands[handle].add(brand.id)
            for term in (*brand.keywords, *brand.hashtags, *brand.handles):
                self._names.add(term, brand.id, plurals=False)
            details: TermIndex[str] = TermIndex()
            for term in brand.exclusions:
                details.add(term, _EXCLUSION)
            for topic, terms in brand.topics.items():
                for term in terms:
                    details.add(term, topic)
            self._details[brand.id] = details

    def attribute(self, mention: Mention, tokens: Sequence[str]) -> list[Attribution]:
        """The brands the mention is about (usually one), each with its topics."""
        named = self._names.find(tokens)
        if mention.brand is not None:
            if mention.brand not in self._brands:
                return []
            named.add(mention.brand)
        if mention.in_reply_to_author is not None:  # a reply to the brand's own post
            named.update(self._handle_brands.get(_handle(mention.in_reply_to_author), ()))
        found = []
        for brand_id in sorted(named) if len(named) > 1 else named:
            if self._own_post(brand_id, mention):
                continue  # the brand speaking (an apology, support replies), not a mention of it
            kinds = self._details[brand_id].find(tokens)
            if _EXCLUSION in kinds:
                if mention.brand is None:
                    continue
                kinds.discard(_EXCLUSION)
            languages = self._brands[brand_id].languages
            if languages and mention.lang is not None and mention.lang not in languages:
                continue
            topics = tuple(sorted(kinds)) if len(kinds) > 1 else tuple(kinds)
            found.append(Attribution(brand_id, topics, self._replies_to(brand_id, mention, tokens)))
        return found

    def own_post(self, mention: Mention) -> bool:
        """Whether one of the configured brands' own accounts posted the mention."""
        return mention.author is not None and _handle(mention.author) in self._handle_brands

    def _own_post(self, brand_id: str, mention: Mention) -> bool:
        return mention.author is not None and _handle(mention.author) in self._handles[brand_id]

    def _replies_to(self, brand_id: str, mention: Mention, tokens: Sequence[str]) -> bool:
        handles = self._handles[brand_id]
        parent = mention.in_reply_to_author
        if parent is not None:
            return _handle(parent) in handles
        # Sources that do not say (exports, HTTP ingest) keep X's convention: a reply starts
        # with the handle it answers.
        return bool(tokens) and tokens[0] in handles and mention.text.lstrip().startswith("@")


def _handle(author: str) -> str:
    """An account name as the brands' handles are kept: "@" and lowercase."""
    return "@" + author.lower().lstrip("@")
