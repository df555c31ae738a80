"""Attributing mentions to brands and topics by the configured queries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crisiswatch.config import Brand
from crisiswatch.domain import Mention
from crisiswatch.enrich.attribution import MAX_TOKENS, Attribution, Attributor, tokenize

MentionFactory = Callable[..., Mention]
BrandFactory = Callable[..., Brand]


def attribute(attributor: Attributor, mention: Mention) -> list[Attribution]:
    return attributor.attribute(mention, tokenize(mention.text))


def brands_of(attributor: Attributor, mention: Mention) -> list[str]:
    return [a.brand for a in attribute(attributor, mention)]


class TestTokenize:
    def test_words_hashtags_handles_lowercased(self) -> None:
        """Tokens are lowercase words, #hashtags and @handles, with the sentence and list
        punctuation not followed by a letter (which phrases do not span); other marks are
        dropped."""
        assert tokenize("Hey @KestrelHelp, my #KestrelBank CARD!! (it's gone)") == [
            "hey",
            "@kestrelhelp",
            ",",
            "my",
            "#kestrelbank",
            "card",
            "!",
            "!",
            "it",
            "s",
            "gone",
        ]

    def test_a_long_post_is_read_to_its_end(self) -> None:
        """A post capped at 10,000 characters is read whole: a brand named after 1,500 words
        is found (only the first 4,800 characters were read)."""
        text = "word " * 1_500 + "kestrel bank, again"
        assert tokenize(text)[-4:] == ["kestrel", "bank", ",", "again"]

    def test_caps_tokens_of_a_long_unbroken_text(self) -> None:
        """A text of 5,000 one-letter words keeps MAX_TOKENS tokens, from its start."""
        assert len(tokenize("a " * 5_000 + "kestrel bank")) == MAX_TOKENS

    @pytest.mark.parametrize(
        "styled",
        [
            "𝐊𝐞𝐬𝐭𝐫𝐞𝐥 𝐁𝐚𝐧𝐤 swallowed my card",  # mathematical bold, common on X
            "Ｋｅｓｔｒｅｌ Ｂａｎｋ swallowed my card",  # fullwidth
        ],
    )
    def test_compatibility_letters_read_as_plain(self, styled: str) -> None:
        assert tokenize(styled)[:2] == ["kestrel", "bank"]

    @pytest.mark.parametrize(("word", "other"), [("กสิกร", "กสุกร"), ("टाटा", "टीटी")])
    def test_words_keep_their_combining_marks(self, word: str, other: str) -> None:
        """Thai and Devanagari vowel signs are part of their word (\\w leaves them out, which
        split words and made two different ones one)."""
        assert tokenize(f"{word} {other}") == [word, other]

    def test_decomposed_accents_read_as_composed(self) -> None:
        assert tokenize("Cafe\u0301 Kestrel") == tokenize("Café Kestrel") == ["café", "kestrel"]


class TestAttributor:
    @pytest.fixture
    def attributor(self, brand: Brand) -> Attributor:
        return Attributor([brand])

    @pytest.mark.parametrize(
        "text",
        [
            "My kestrel bank account is locked",
            "KESTREL BANK is down again",
            "kestrelbank support please",
            "love #KestrelBank today",
            "hey @KestrelHelp any news?",
            "Kestrel   Bank, again.",
        ],
    )
    def test_queries_match(
        self, attributor: Attributor, make_mention: MentionFactory, text: str
    ) -> None:
        """Keywords, phrases, hashtags and handles match, whatever the case and spacing."""
        assert brands_of(attributor, make_mention(text=text)) == ["kestrel"]

    @pytest.mark.parametrize(
        "text",
        [
            "kestrel banking is a new word",  # phrase must end on a whole word
            "the kestrel flew over the bank",  # phrase words must be adjacent
            "bank kestrel",  # and in order
            "nokestrelbank here",  # keyword must be a whole word
            "kestrel",
            "an unrelated post",
            "Saw a kestrel. Bank holiday today",  # a phrase does not span sentences
            'I quit "Kestrel." Bank holidays are next',  # a quote after the full stop
            "kestrel!😡 bank holiday",  # an emoji after it
            "kestrel.) Bank holiday",  # a bracket after it
            "owl, kestrel, bank swallow",  # nor list items
            "kestrelbanks of the river",  # a brand's name has no plural
        ],
    )
    def test_partial_matches_do_not_count(
        self, attributor: Attributor, make_mention: MentionFactory, text: str
    ) -> None:
        """Only whole words and whole phrases attribute a mention."""
        assert attribute(attributor, make_mention(text=text)) == []

    @pytest.mark.parametrize("author", ["KestrelHelp", "@kestrelhelp", "KESTRELHELP"])
    def test_the_brand_s_own_accounts_do_not_mention_it(
        self, attributor: Attributor, make_mention: MentionFactory, author: str
    ) -> None:
        """A post by one of the brand's handles is the brand speaking (an apology, a support
        reply), not a mention of it: it must not count as volume, nor as a complaint (an
        apology reads as negative), even when an export already tagged it with the brand. The
        customer it answers still counts, and is a reply to the brand."""
        own = make_mention(text="We're sorry, Kestrel Bank's app is down", author=author)
        tagged = make_mention(text="Please DM us", author=author, brand="kestrel")
        assert attribute(attributor, own) == [] and attribute(attributor, tagged) == []
        assert attributor.own_post(own) and not attributor.own_post(make_mention(author="amy"))
        answer = make_mention(text="@KestrelHelp still waiting", in_reply_to_author="KestrelHelp")
        assert attribute(attributor, answer) == [Attribution("kestrel", (), True)]

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            ("Yahoo!", "yahoo is down again"),
            ("Yahoo! Mail", "Yahoo! Mail is down again"),
            ("Yahoo! Mail", "yahoo mail is down again"),
            ("Mr. Cooper", "Mr. Cooper foreclosed on me"),
            ("J.P. Morgan", "J.P. Morgan froze my account"),
            ("Booking.com", "booking.com lost my reservation"),
        ],
    )
    def test_punctuation_inside_a_configured_name(
        self, make_brand: BrandFactory, make_mention: MentionFactory, name: str, text: str
    ) -> None:
        """A name with punctuation in it is found spelt with it or without it."""
        attributor = Attributor([make_brand(id="named", keywords=[name], hashtags=[])])
        assert brands_of(attributor, make_mention(text=text)) == ["named"]

    @pytest.mark.parametrize(
        ("name", "text", "found"),
        [
            ("トヨタ", "トヨタの車が壊れた", True),  # Japanese: no spaces between words
            ("丰田", "我的丰田车坏了", True),  # Chinese
            ("โตโยต้า", "รถโตโยต้าเสียอีกแล้ว", True),  # Thai
            ("トヨタ", "ホンダの車が壊れた", False),
            ("トヨタ", "toyota broke down", False),
        ],
    )
    def test_names_in_scripts_without_spaces(
        self,
        make_brand: BrandFactory,
        make_mention: MentionFactory,
        name: str,
        text: str,
        found: bool,
    ) -> None:
        """A name written in a script without spaces is found inside the post's words (as a
        whole token it never was)."""
        attributor = Attributor([make_brand(id="toyota", keywords=[name], hashtags=[])])
        assert brands_of(attributor, make_mention(text=text)) == (["toyota"] if found else [])

    def test_a_brands_language_code_in_capitals_still_matches(
        self, make_brand: BrandFactory, make_mention: MentionFactory
    ) -> None:
        """`languages: [pt-BR]` in the config matches a mention whose code is read as pt-br."""
        attributor = Attributor([make_brand(languages=["pt-BR"])])
        assert brands_of(attributor, make_mention(text="kestrel bank caiu", lang="pt-br")) == [
            "kestrel"
        ]

    def test_a_term_of_punctuation_alone_matches_nothing(
        self, make_brand: BrandFactory, make_mention: MentionFactory
    ) -> None:
        attributor = Attributor([make_brand(id="odd", keywords=["?", "!!!"], hashtags=[])])
        assert brands_of(attributor, make_mention(text="anyone? what a day!")) == []

    def test_topics_tagged(self, attributor: Attributor, make_mention: MentionFactory) -> None:
        """A mention is tagged with every topic whose terms it contains, sorted."""
        (found,) = attribute(
            attributor, make_mention(text="Kestrel Bank app login broke and ate my card")
        )
        assert found == Attribution("kestrel", ("app", "cards"))

    def test_no_topic(self, attributor: Attributor, make_mention: MentionFactory) -> None:
        """A mention about none of the topics still counts for the brand, with no topics."""
        assert attribute(attributor, make_mention(text="kestrel bank hello")) == [
            Attribution("kestrel", ())
        ]

    def test_plural_topic_term(self, attributor: Attributor, make_mention: MentionFactory) -> None:
        """A plural word matches its singular topic term: "cards" finds "card"."""
        (found,) = attribute(attributor, make_mention(text="Kestrel Bank cards declined"))
        assert found.topics == ("cards",)

    def test_phrase_topic_term(
        self, make_brand: BrandFactory, make_mention: MentionFactory
    ) -> None:
        """A multi-word topic term matches only as a whole phrase."""
        attributor = Attributor([make_brand(topics={"cards": ["credit card"]})])
        (hit,) = attribute(attributor, make_mention(text="kestrel bank credit card fraud"))
        (miss,) = attribute(attributor, make_mention(text="kestrel bank credit on my card"))
        assert hit.topics == ("cards",)
        assert miss.topics == ()

    @pytest.mark.parametrize(
        "text",
        ["Saw a kestrel falcon over Kestrel Bank HQ", "kestrel bank tower #birding"],
    )
    def test_exclusions_win(
        self, attributor: Attributor, make_mention: MentionFactory, text: str
    ) -> None:
        """A mention containing an exclusion is not about the brand, keywords or not."""
        assert attribute(attributor, make_mention(text=text)) == []

    def test_explicit_brand_beats_exclusions(
        self, attributor: Attributor, make_mention: MentionFactory
    ) -> None:
        """A mention that names its brand explicitly is attributed despite an exclusion."""
        mention = make_mention(text="kestrel falcon on my kestrel bank card", brand="kestrel")
        assert attribute(attributor, mention) == [Attribution("kestrel", ("cards",))]

    def test_explicit_brand_without_keywords(
        self, attributor: Attributor, make_mention: MentionFactory
    ) -> None:
        """An explicit brand attributes a mention whose text has none of its keywords."""
        mention = make_mention(text="the app will not open", brand="kestrel")
        assert attribute(attributor, mention) == [Attribution("kestrel", ("app",))]

    def test_unknown_explicit_brand(
        self, attributor: Attributor, make_mention: MentionFactory
    ) -> None:
        """A mention naming a brand that is not configured is about nothing."""
        mention = make_mention(text="kestrel bank app", brand="othercorp")
        assert attribute(attributor, mention) == []

    @pytest.mark.parametrize(("lang", "expected"), [("en", 1), ("de", 1), ("fr", 0), (None, 1)])
    def test_languages_filter(
        self,
        make_brand: BrandFactory,
        make_mention: MentionFactory,
        lang: str | None,
        expected: int,
    ) -> None:
        """A brand limited to some languages skips mentions in others; unknown passes."""
        attributor = Attributor([make_brand(languages=["en", "de"])])
        found = attribute(attributor, make_mention(text="kestrel bank", lang=lang))
        assert len(found) == expected

    def test_no_language_filter(self, attributor: Attributor, make_mention: MentionFactory) -> None:
        """A brand without languages takes mentions in any language."""
        assert brands_of(attributor, make_mention(text="kestrel bank", lang="fr")) == ["kestrel"]

    def test_two_brands_in_one_post(
        self, make_brand: BrandFactory, make_mention: MentionFactory
    ) -> None:
        """A post about two brands is attributed to each, with each brand's own topics."""
        attributor = Attributor(
            [
                make_brand(),
                make_brand(
                    id="acme",
                    name="Acme",
                    keywords=["acme"],
                    hashtags=[],
                    handles=[],
                    exclusions=[],
                    topics={"fees": ["fee"]},
                ),
            ]
        )
        found = attribute(
            attributor, make_mention(text="Moved from Kestrel Bank to Acme: no fees, nice app")
        )
        assert found == [Attribution("acme", ("fees",)), Attribution("kestrel", ("app",))]

    def test_exclusion_of_one_brand_spares_the_other(
        self, make_brand: BrandFactory, make_mention: MentionFactory
    ) -> None:
        """One brand's exclusion does not rule the post out for another brand."""
        attributor = Attributor(
            [make_brand(), make_brand(id="acme", keywords=["acme"], exclusions=[], topics={})]
        )
        found = brands_of(attributor, make_mention(text="kestrel falcon at kestrel bank and acme"))
        assert found == ["acme"]

    def test_keyword_after_the_token_cap_is_not_read(
        self, attributor: Attributor, make_mention: MentionFactory
    ) -> None:
        """Only the first MAX_TOKENS tokens of a huge post are read (the cost is bounded)."""
        text = "blah " * MAX_TOKENS + "kestrel bank"
        assert attribute(attributor, make_mention(text=text)) == []
        assert brands_of(attributor, make_mention(text="kestrel bank " + text)) == ["kestrel"]
