"""Write the bundled demo stream: two days of mentions of Kestrel Bank, a fictional bank.

Run ``python -m crisiswatch.demo.generate [--out PATH]``. The output is deterministic: one
seeded ``random.Random`` drives everything, and the gzip header carries no name and mtime 0, so
the bytes are identical on every run and every machine.

Each line is one `Mention` as JSON (``id``, ``source``, ``created_at``, ``text`` and mostly
``author``, ``author_followers``, ``url``, ``lang``; a minority carry ``"brand": "kestrel"``,
the rest are attributed by the brand's keywords, hashtag and handles). Lines are in
``created_at`` order, except late arrivals (about 1%) and duplicates (about 2%), which are at
most two minutes behind.

The story, in UTC, from 2026-03-02T00:00 to 2026-03-04T00:00 ("per 5 min" counts every
unique brand mention in the bucket, calm traffic and retweets included, exclusions dropped):

Calm baseline, both days
    A daily rhythm: 1-3 brand mentions per 5 minutes at night (00-06), rising through the
    morning to 12-20 in the afternoon, falling in the evening. About 70% X, 30% Reddit;
    neutral questions, praise and ordinary complaints (about 17% negative) about cards, the
    app, branches or nothing in particular; 4% of calm tweets in Spanish, German or French.

Incident 1, day 1 (03-02), 15:10 to about 17:00: the tone-deaf reply (all topics; X, then Reddit)
    14:58:12 a customer (@rentday_rosie) says her rent payment bounced; 15:09:41 @KestrelBank
    (402k followers) answers with a joke. From 15:10 hundreds of angry replies ("@KestrelBank
    ...") from distinct authors: 51 per 5 min at 15:10, peak 133 at 15:40 (calm is about 18),
    with media accounts (150k-2M followers) piling in from 15:34 and Reddit threads from 15:52;
    back under 30 by 16:45. The brand apologises at 17:25:03.

Incident 2, day 2 (03-03), 02:05 to about 03:50: ATMs swallow cards at night (topic cards)
    Angry posts about cards retained "at 2am" rise for 20 minutes to 18-27 per 5 min (peak 27
    at 02:30; calm is about 2) and fade over two hours; X first, Reddit (r/personalfinance,
    r/KestrelBank) from 02:31. @KestrelHelp acknowledges it at 03:12:26.

Campaign, day 2, 10:30 to 11:30: #KestrelCares, NOT a crisis
    @KestrelBank launches #KestrelCares (posts at 10:30, 10:46, 11:02, 11:21) with happy
    replies and retweets: 25-38 per 5 min against a calm of about 15; the campaign's own
    posts are all positive.

Incident 3, day 2, 11:30 to about 13:30: #KestrelCares hijacked (X, then Reddit)
    Complaints ride the hashtag (fees, branch closings, app outages, the two earlier
    incidents): peak 70 per 5 min at 12:00 (calm is about 15), above 40 until 13:10, mostly
    negative; Reddit threads from 12:02.

Noise, which the daemon must survive without paging
    Day 1 09:00-09:10 one author, crypto_gains_4u, posts 80 near-identical promotions naming
    Kestrel Bank (56 and 49 mentions in the two buckets). Birders post about kestrels with
    #birding in daylight (some even "kestrel banking"), which the brand's exclusions drop.
    About 2% exact duplicate lines, retweets ("RT @author: ..."), emoji-only posts, four
    4,000-10,000 character Reddit posts, five empty texts, seven texts that try to ping or
    trick Slack (``<!channel>``, ``@here``, ``<url|label>``) and exactly 3 malformed lines:
    invalid JSON (day 1 07:41), no created_at (day 1 21:18), created_at hour 25 (day 2 18:02).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

# --- the frame -------------------------------------------------------------------------------

SEED = 20260302
START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 2
SPAN_S = DAYS * 86_400
BUCKET_S = 300
DEFAULT_OUT = Path(__file__).with_name("demo_mentions.jsonl.gz")

BRAND_ID = "kestrel"
BRAND_TERMS = ("kestrel bank", "kestrelbank", "kestrel app", "kestrel card", "@kestrelhelp")
"""Lowercase: the keywords and handles (``kestrelbank`` covers @KestrelBank and #KestrelBank)."""
EXCLUSIONS = ("#birding", "kestrel falcon", "kestrel bird")

X_SHARE = 0.60  # of calm posts; incidents and retweets lean to X, so about 70% overall
NEGATIVE_SHARE = 0.17
POSITIVE_SHARE = 0.28
FOREIGN_SHARE = 0.04
HELP_REPLY_SHARE = 0.02
REDDIT_POST_SHARE = 0.35
TOPIC_WEIGHTS = (("cards", 0.20), ("app", 0.25), ("branches", 0.12), ("", 0.43))

HOURLY_RATE = (
    2.2, 1.8, 1.5, 1.4, 1.6, 2.2, 3.5, 6.0, 8.5, 11.0, 13.0, 14.0, 15.0,
    16.0, 16.5, 17.0, 17.0, 16.0, 15.0, 13.5, 11.0, 8.5, 6.0, 4.0, 2.2,
)  # fmt: skip
"""Calm brand mentions per 5 minutes at each UTC hour (index 24 wraps to midnight)."""

BIRD_POSTS_PER_HOUR = 4.0
BIRD_HOURS = (6, 19)

X_AUTHORS = 3_000
REDDIT_AUTHORS = 1_200
BIRD_AUTHORS = 120
TWITTER_EPOCH_MS = 1_288_834_974_657

RETWEET_DELAY_S = 360.0
DUPLICATE_SHARE = 0.02
LATE_SHARE = 0.01
LATE_S = (15, 90)
DUPLICATE_DELAY_S = 30
"""A late post is at most 90 s late and its duplicate 30 s after it: at most 2 minutes."""


def _at(day: int, hour: int, minute: int, second: int = 0) -> int:
    """Seconds since START of day ``day`` (0 or 1) at hour:minute:second UTC."""
    return day * 86_400 + hour * 3_600 + minute * 60 + second


# --- the incidents and noise events ----------------------------------------------------------

BRAND_HANDLE = "KestrelBank"
BRAND_FOLLOWERS = 402_318
HELP_HANDLE = "KestrelHelp"
HELP_FOLLOWERS = 38_204

RENT_COMPLAINT_AT = _at(0, 14, 58, 12)
RENT_CUSTOMER = ("rentday_rosie", 312)
RENT_REPLY_AT = _at(0, 15, 9, 41)
PILE_ON_START = _at(0, 15, 10)
PILE_ON_SHAPE = (
    7, 22, 45, 68, 86, 95, 90, 80, 68, 58, 50, 43, 36, 30, 25, 21, 17, 14, 11, 9, 7, 6, 5, 4,
)  # fmt: skip
"""Angry replies per 5 minutes from PILE_ON_START."""
PILE_ON_REDDIT_FROM = _at(0, 15, 50)
PILE_ON_MEDIA = (
    (_at(0, 15, 34, 10), "FinanceWireNews", 1_240_000),
    (_at(0, 15, 47, 33), "PennyWiseSara", 512_000),
    (_at(0, 16, 3, 5), "BizBreakingNow", 2_010_000),
    (_at(0, 16, 18, 48), "ConsumerWatchUK", 318_000),
    (_at(0, 16, 36, 20), "TheMoneyDesk", 642_000),
    (_at(0, 16, 52, 2), "MarketPulseDaily", 154_000),
)
BRAND_APOLOGY_AT = _at(0, 17, 25, 3)

ATM_START = _at(1, 2, 5)
ATM_SHAPE = (
    2, 5, 10, 16, 20, 23, 22, 21, 20, 19, 18, 17, 16, 15, 13, 11, 9, 8, 6, 5, 4, 3, 2, 2,
)  # fmt: skip
ATM_REDDIT_FROM = _at(1, 2, 30)
ATM_HELP_REPLY_AT = _at(1, 3, 12, 26)
ATM_MEDIA_AT = _at(1, 3, 27, 51)

CAMPAIGN_START = _at(1, 10, 30)
CAMPAIGN_SHAPE = (4, 8, 10, 12, 12, 11, 10, 10, 9, 9, 8, 8, 6, 5, 4, 3, 2, 2)
CAMPAIGN_BRAND_POSTS = (_at(1, 10, 30, 0), _at(1, 10, 46, 12), _at(1, 11, 2, 40), _at(1, 11, 21, 5))
HIJACK_START = _at(1, 11, 30)
HIJACK_SHAPE = (
    3, 8, 14, 22, 30, 36, 40, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20, 18,
    16, 14, 12, 10, 9, 8, 6, 5, 4, 3,
)  # fmt: skip
HIJACK_REDDIT_FROM = _at(1, 12, 0)
HIJACK_MEDIA = (
    (_at(1, 12, 41, 17), "TheMoneyDesk", 642_000),
    (_at(1, 13, 8, 55), "PennyWiseSara", 512_000),
)

SPAM_AUTHOR = ("crypto_gains_4u", 1_187)
SPAM_START = _at(0, 9, 0)
SPAM_POSTS = 80
SPAM_EVERY_S = 7

HOSTILE_POSTS = (
    (_at(0, 4, 12, 7), "<!channel> kestrel bank is down"),
    (_at(0, 13, 47, 30), "@here @KestrelBank"),
    (_at(0, 20, 3, 51), "<https://evil.example|click here> kestrel card"),
    (_at(1, 1, 22, 9), "<!everyone> URGENT Kestrel Bank data breach, check your accounts NOW"),
    (_at(1, 8, 40, 44), "<@U024BE7LH> look at this kestrel app bug *now* ```rm -rf /```"),
    (_at(1, 16, 55, 2), "<!subteam^S0123ABC> @KestrelBank <mailto:help@evil.example|support>"),
    (_at(1, 21, 30, 0), "@channel <https://evil.example/login|Verify your Kestrel Bank account>"),
)
EMPTY_POSTS = (
    _at(0, 7, 3, 19), _at(0, 16, 11, 40), _at(1, 2, 48, 2), _at(1, 12, 20, 33), _at(1, 19, 4, 8),
)  # fmt: skip
LONG_POSTS = (
    (_at(0, 11, 20, 5), "personalfinance", 4_300, "mortgage"),
    (_at(0, 18, 2, 40), "KestrelBank", 9_500, "rent"),
    (_at(1, 3, 41, 12), "personalfinance", 5_200, "atm"),
    (_at(1, 12, 58, 20), "KestrelBank", 7_100, "cares"),
)
"""(time, subreddit, minimum length, theme) of the very long Reddit posts."""
EMOJI_POSTS = 24
PILE_ON_EMOJI_POSTS = 25

MALFORMED_LINES = (
    (_at(0, 7, 41, 13), "invalid-json"),
    (_at(0, 21, 18, 40), "missing-created-at"),
    (_at(1, 18, 2, 55), "bad-created-at"),
)

# --- words -----------------------------------------------------------------------------------

FIRST_NAMES = (
    "amy", "ben", "chloe", "dan", "ellie", "femi", "gav", "hannah", "isaac", "jess", "kev",
    "laura", "mo", "nadia", "ollie", "priya", "rob", "sian", "tom", "una", "vik", "will",
    "zara", "aisha", "callum", "dev", "erin", "freya", "george", "harvey", "imogen", "jamal",
    "kate", "liam", "megan", "niall", "olu", "rhys", "sophie", "tariq", "yasmin", "jo",
)  # fmt: skip
LAST_NAMES = (
    "smith", "jones", "patel", "evans", "khan", "brown", "walsh", "okafor", "price", "hughes",
    "reid", "clarke", "murphy", "ali", "wood", "lewis", "moran", "doyle", "shaw", "begum",
)  # fmt: skip
ADJECTIVES = (
    "sleepy", "grumpy", "lucky", "quiet", "salty", "tiny", "cosmic", "rusty", "sunny", "lazy",
    "brave", "fuzzy", "odd", "wild", "mellow", "spicy", "frosty", "clumsy", "noisy", "polite",
)  # fmt: skip
NOUNS = (
    "otter", "teapot", "biscuit", "fox", "kettle", "badger", "pigeon", "toast", "moth", "crumpet",
    "llama", "cactus", "walrus", "pickle", "raven", "hedgehog", "noodle", "puffin", "mango", "owl",
)  # fmt: skip
TOWNS = (
    "Leeds", "Bristol", "Norwich", "Derby", "Swindon", "Cardiff", "York", "Preston", "Luton",
    "Exeter", "Hull", "Bolton", "Reading", "Stoke", "Bath", "Wigan", "Ipswich", "Dundee",
    "Croydon", "Sheffield", "Glasgow", "Belfast", "Brighton", "Camden", "Salford",
)  # fmt: skip
STREETS = (
    "High Street", "Market Street", "Station Road", "Church Lane", "King Street", "Mill Road",
    "Victoria Road", "the retail park", "Queen Street", "the high st", "London Road",
)  # fmt: skip
SHOPS = (
    "Tesco", "Sainsbury's", "the petrol station", "Greggs", "the pharmacy", "Aldi", "the chippy",
    "Boots", "the corner shop", "Lidl", "the pub",
)  # fmt: skip
PLACES = (
    "Rutland Water", "the water meadows", "Minsmere", "the old quarry", "Pagham Harbour",
    "the allotments", "Wicken Fen", "the ring road verge", "the reservoir", "Otmoor",
)  # fmt: skip
SUBREDDITS = (
    "personalfinance", "UKPersonalFinance", "KestrelBank", "banking", "povertyfinance",
    "CasualUK",
)  # fmt: skip
NEG_EMOJI = ("😡", "🤬", "🙄", "😤", "🤦", "😠", "💀")
POS_EMOJI = ("🙌", "❤️", "👏", "😊", "💚", "🎉", "👍")

SLOTS: dict[str, tuple[str, ...]] = {
    "name": ("Kestrel Bank", "kestrel bank", "Kestrel Bank", "KestrelBank", "Kestrel Bank"),
    "bank": (
        "Kestrel Bank",
        "@KestrelBank",
        "kestrel bank",
        "#KestrelBank",
        "@KestrelBank",
        "Kestrel Bank",
        "KestrelBank",
    ),
    "help": ("@KestrelHelp", "@KestrelBank", "@KestrelHelp"),
    "app": (
        "the Kestrel app",
        "Kestrel Bank's app",
        "my kestrel app",
        "the @KestrelBank app",
        "the Kestrel Bank app",
    ),
    "card": (
        "Kestrel card",
        "kestrel card",
        "@KestrelBank debit card",
        "Kestrel Bank card",
        "kestrel card",
        "Kestrel debit card",
    ),
    "branch": (
        "the Kestrel Bank branch on {street}",
        "my local Kestrel Bank",
        "the @KestrelBank branch in {town}",
        "Kestrel Bank {town}",
    ),
    "town": TOWNS,
    "street": STREETS,
    "shop": SHOPS,
    "place": PLACES,
    "mins": ("20", "25", "35", "40", "45", "50", "55", "70", "90", "110"),
    "days": ("3", "4", "5", "6", "8", "9", "12", "14"),
    "fee": ("5", "8", "10", "12", "15", "20", "25", "35"),
    "years": ("4", "6", "8", "10", "12", "15", "20", "25"),
    "n": ("2", "3", "4", "5", "6", "7"),
    "shame": (
        "shameful",
        "disgraceful",
        "vile",
        "appalling",
        "disgusting",
        "cruel",
        "pathetic",
        "unacceptable",
        "sickening",
        "embarrassing",
    ),
    "leave": (
        "closing my account",
        "moving my salary elsewhere",
        "switching banks",
        "cutting up my card",
        "taking my savings elsewhere",
        "moving my mortgage",
    ),
    "when": ("today", "tomorrow", "this week", "tonight", "first thing monday"),
    "month": ("january", "february", "december", "november", "october"),
    "neg": NEG_EMOJI,
    "pos": POS_EMOJI,
}
"""Slot fillers for templates; a filler may itself contain slots."""

REDDIT_SLOTS: dict[str, tuple[str, ...]] = {
    "name": ("Kestrel Bank", "Kestrel", "kestrel bank", "Kestrel Bank", "KestrelBank"),
    "bank": ("Kestrel Bank", "Kestrel", "kestrel bank", "Kestrel Bank", "KestrelBank"),
    "help": (
        "Kestrel Bank support",
        "their support line",
        "Kestrel's helpline",
        "customer service",
    ),
    "app": ("the Kestrel app", "Kestrel Bank's app", "the kestrel app"),
    "card": ("Kestrel card", "Kestrel Bank debit card", "kestrel card"),
    "branch": (
        "the Kestrel Bank branch in {town}",
        "my local Kestrel Bank",
        "the Kestrel branch on {street}",
    ),
}

BASELINE_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("cards", "neg"): (
        "my {card} got declined at {shop} for the third time this week. the money is literally "
        "in the account. {bank} sort it out {neg}",
        "{name} froze my {card} for suspicious activity because I bought groceries. {mins} "
        "minutes on hold to unfreeze it. useless",
        "the {name} atm on {street} ate my card. no warning, no receipt, nothing. furious",
        "contactless on my {card} stopped working again. so embarrassing at the till. "
        "fix it {help}",
        "ordered a new {card} {days} days ago and it still hasn't arrived. worst bank I've "
        "ever used",
        "why does {name} charge me {fee} quid for using a cash machine abroad?? daylight robbery",
        "forgot my pin and {name} says a new one takes 10 working days. ten. days. ridiculous",
        "got charged twice on my {card} and {help} keeps telling me to wait. I want my money back",
        "my {card} declined for a 3 pound coffee. card is active, app says fine. hate this {neg}",
    ),
    ("cards", "pos"): (
        "lost my {card} this morning, froze it in the app in ten seconds and a new one is on the "
        "way. great job {bank} {pos}",
        "shoutout to {help} for refunding a dodgy charge on my {card} within an hour. brilliant",
        "love that you can set your own contactless limit on the {card}. {bank} getting it right",
        "the new metal {card} design is gorgeous ngl {pos}",
        "used my {card} abroad all week with zero fees. thank you {bank}!",
        "{name} spotted a fraudulent payment on my {card} before I did and sorted it. so relieved",
    ),
    ("cards", "neu"): (
        "does the {card} work with apple pay yet? {help}",
        "how long does a replacement {card} usually take? {help}",
        "is there a {name} atm near {town} station? need cash",
        "can I change the pin on my {card} at any atm or only at Kestrel Bank ones?",
        "what's the daily withdrawal limit on the {card}? asking for a trip",
        "is the {card} a visa or mastercard? booking site is asking",
    ),
    ("app", "neg"): (
        "{app} logged me out again and now won't let me log in. {mins} minutes of this. "
        "{bank} please",
        "is {app} down or is it just me? can't see my balance and rent is due tomorrow {neg}",
        "the latest update to {app} is awful. everything moved and transfers take five taps "
        "now. roll it back",
        "{app} crashed mid-transfer and now I don't know if the money went. terrible {help}",
        "third outage this month. {bank} you had one job {neg}",
        "face id on {app} hasn't worked since the update. so annoying",
        "{app} keeps crashing on login. uninstalled, reinstalled, still broken. fed up",
    ),
    ("app", "pos"): (
        "the spending insights in {app} are actually really useful. nice one {bank}",
        "{app} update is slick, love the new savings pots {pos}",
        "sent money abroad through {app} in under a minute. genuinely impressed",
        "{app} is the only banking app I don't hate. well done {bank}",
        "the round-up savings in {app} have saved me 200 quid this year without noticing {pos}",
    ),
    ("app", "neu"): (
        "anyone know how to export statements from {app}? {help}",
        "is there a dark mode in {app} yet?",
        "will {app} support joint accounts soon? {help}",
        "got a notification from {app} about an update tonight, any downtime expected? {help}",
        "where do I find my sort code in {app}?",
    ),
    ("branches", "neg"): (
        "{name} closing the {town} branch is a disgrace. my nan has no other way to bank",
        "{mins} minutes in the queue at {branch} with one teller working. shocking",
        "{branch} closed at 3pm with people still queueing outside. awful customer service",
        "drove 40 minutes to {branch} and it's permanently closed. nobody told us {neg}",
        "another branch closing. {name} clearly doesn't care about anyone over 60",
    ),
    ("branches", "pos"): (
        "the teller at {branch} was so kind helping my dad set up his account {pos}",
        "no queue, friendly staff, sorted in five minutes. {branch} is great",
        "big thanks to the team at {branch} for sorting my mortgage paperwork today",
    ),
    ("branches", "neu"): (
        "what time does {branch} open on saturdays?",
        "can I pay in cheques at {branch} or do I need an appointment? {help}",
        "is {branch} still closing next month or did that change?",
    ),
    ("", "neg"): (
        "{name} customer service is a joke. {mins} minutes on hold and then cut off {neg}",
        "transfer to my landlord still pending after {days} days. {bank} what is going on",
        "switched to {name} last year and regretting it every single day",
        "{name} just charged me a {fee} pound fee for going 3 pounds overdrawn. disgusting",
        "nobody at {name} can give me a straight answer about my mortgage. so frustrated",
        "{name} rejected my complaint without even reading it. appalling",
    ),
    ("", "pos"): (
        "{name} sorted my overdraft in one phone call. lovely people",
        "been with {name} {years} years and never had an issue. solid",
        "the savings rate at {name} is honestly the best I've found {pos}",
        "{help} replied in two minutes and fixed it. that's how it's done",
        "switched to {name} and my mortgage came through in a week. delighted {pos}",
        "huge thanks {bank}, you made buying our first home so easy",
    ),
    ("", "neu"): (
        "anyone here bank with {name}? thinking of switching",
        "what's the interest rate on the {name} easy saver right now?",
        "{name} or monzo for a joint account? opinions please",
        "does {name} do business accounts for sole traders?",
        "{help} how do I update my address?",
        "just opened a {name} account, anything I should know?",
        "is {name} covered by the FSCS?",
    ),
}

FOREIGN_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "es": {
        "neg": (
            "{name} me ha bloqueado la tarjeta otra vez. qué vergüenza {neg}",
            "el cajero de Kestrel Bank se tragó mi tarjeta. increíble, nadie contesta",
            "llevo {mins} minutos esperando al teléfono con {name}. pésimo servicio",
        ),
        "pos": (
            "Muy contenta con {name}, la atención fue rapidísima {pos}",
            "la nueva Kestrel app funciona genial, por fin",
        ),
        "neu": (
            "¿alguien sabe si la Kestrel app funciona hoy? no puedo entrar",
            "¿{name} cobra comisión por sacar dinero en España?",
        ),
    },
    "de": {
        "neg": (
            "{name} hat schon wieder meine Karte gesperrt. Unfassbar {neg}",
            "Die Kestrel App stürzt ständig ab. Was ist da los {bank}?",
            "Seit {days} Tagen keine Antwort von {help}. Katastrophe.",
        ),
        "pos": (
            "Super Service von {bank} heute, danke! {pos}",
            "Endlich eine Bank ohne versteckte Gebühren. Danke Kestrel Bank",
        ),
        "neu": (
            "Weiß jemand, ob die Filiale von Kestrel Bank am Samstag offen hat?",
            "Funktioniert die Kestrel Card auch in Österreich? {help}",
        ),
    },
    "fr": {
        "neg": (
            "{name} a encore bloqué ma carte. Inadmissible {neg}",
            "L'appli Kestrel Bank plante depuis ce matin. Ras-le-bol.",
            "L'agence Kestrel Bank près de chez moi ferme le mois prochain. Scandaleux.",
        ),
        "pos": (
            "Merci {bank}, problème réglé en cinq minutes {pos}",
            "Franchement la Kestrel app est top, rien à redire",
        ),
        "neu": (
            "Quelqu'un sait si {name} fonctionne en France ?",
            "Comment changer mon code PIN sur la Kestrel card ? {help}",
        ),
    },
}

HELP_REPLIES = (
    "@{user} Hi, sorry to hear that. Please DM us a few details and we'll take a look. ^{sig}",
    "@{user} Thanks for flagging this. Could you send us a DM so we can check your account? ^{sig}",
    "@{user} Glad we could help! Have a lovely day. ^{sig}",
    "@{user} We're sorry for the wait. A specialist will pick this up via DM shortly. ^{sig}",
)
HELP_SIGNATURES = ("Sam", "Priya", "Leon", "Beth", "Dom", "Ade")

NEG_OPENERS = ("", "", "", "ugh ", "honestly ", "wow. ", "seriously ", "ok so ", "again. ")
NEG_CLOSERS = ("", "", "", " {neg}", " smh", "!!", " #fail", " {neg}{neg}")
POS_OPENERS = ("", "", "", "honestly ", "not gonna lie, ", "shoutout: ")
POS_CLOSERS = ("", "", " {pos}", "!", " {pos}{pos}")
REDDIT_OPENERS = {
    "neg": ("", "", "", "PSA: ", "Rant: ", "Anyone else? ", "Vent: "),
    "pos": ("", "", "", "Credit where it's due: ", "Good news for once: "),
    "neu": ("", "", "", "Question: ", "Genuine q: ", "Quick one: "),
}
REDDIT_COMMENT_OPENERS = {
    "neg": ("", "", "Same here. ", "This. ", "Ugh, ", "Yep, "),
    "pos": ("", "", "Same here! ", "Agreed, ", "Honestly "),
    "neu": ("", "", "Following, ", "Also wondering: ", "Not sure, but "),
}

RENT_COMPLAINT = (
    "@KestrelBank my rent payment bounced even though my salary landed yesterday. landlord is "
    "threatening a late fee. please fix this, I'm panicking"
)
RENT_REPLY = (
    "@rentday_rosie Have you tried having more money? 😂 jk jk. Banking is hard, but Kestrel "
    "Bank makes it look easy 💅 #KestrelBank"
)
BRAND_APOLOGY = (
    "Earlier we replied to a customer in a way that was careless and hurtful. We're sorry. We've "
    "contacted @rentday_rosie, refunded the fee and are reviewing how we post. #KestrelBank"
)
PILE_ON_TEMPLATES = (
    "@KestrelBank mocking a customer whose rent bounced? absolutely disgusting. delete this",
    "@KestrelBank your customer can't pay rent because of YOUR error and you reply with a "
    "joke?? unreal {neg}",
    "@KestrelBank who approved this reply. genuinely vile way to treat someone who's struggling",
    "@KestrelBank closing my account tomorrow. this is how you talk to customers?",
    "@KestrelBank imagine being a bank and laughing at people who can't make rent. shameful {neg}",
    "@KestrelBank this is the most tone-deaf thing I've seen a company post all year",
    "@KestrelBank fix her payment and apologise. the joke isn't funny, it's cruel",
    "@KestrelBank 'have you tried having more money' from a bank that charges {fee} quid "
    "overdraft fees. wow",
    "@KestrelBank my rent bounced last month too. nice to know you find it hilarious {neg}",
    "@KestrelBank your social team needs a day off and you owe her an apology. now.",
    "@KestrelBank disgraceful. ratioed and deserved",
    "@KestrelBank people are one bounced payment from eviction and you're doing bits. pathetic",
    "@KestrelBank @rentday_rosie hope you get your money back. unbelievable behaviour from a bank",
    "@KestrelBank screenshot taken. this is going everywhere",
    "@KestrelBank been with you {years} years and I'm embarrassed. moving everything this week",
    "@KestrelBank absolutely horrible. you should be ashamed {neg}{neg}",
    "@KestrelBank my mum got a bounced payment from you last year and cried for two days. "
    "this isn't a joke to us",
    "@KestrelBank cruel, smug and out of touch. cancelled my card {neg}",
    "@KestrelBank the arrogance. you caused the bounce and then you mock her?",
    "@KestrelBank hey @KestrelHelp maybe help her instead of whatever this was",
    "@KestrelBank I work two jobs and your bank bounced my rent in january. this reply is vile",
    "@KestrelBank sickening. hope the regulator sees this",
)
PILE_ON_REACTIONS = (
    "mocking a customer whose rent bounced? {shame}.",
    "who approved this reply? genuinely {shame}.",
    "you bounced her rent and then you joke about it? {shame}.",
    "imagine being a bank and laughing at people who can't make rent.",
    "the joke isn't funny, it's cruel.",
    "people are one bounced payment from eviction and you're doing bits.",
    "my rent bounced with you in {month} too. glad you find it hilarious.",
    "cruel, smug and out of touch.",
    "the arrogance. you caused the bounce and then you mock her?",
    "I work two jobs and you bounced my rent in {month}. this reply is {shame}.",
    "delete this. absolutely {shame}.",
    "screenshot taken, this is going everywhere.",
    "your social team owes her an apology, not a punchline.",
    "this is {shame}. she needed help and you made her a joke.",
    "how is this an acceptable way to talk to a customer? {shame}.",
    "laughing at someone facing a late rent fee. stay classy.",
    "you should be ashamed of yourselves.",
    "this is why nobody trusts banks.",
)
PILE_ON_CONSEQUENCES = (
    "", "", "", "{leave} {when}.", "hope the regulator sees this.",
    "fix her payment and apologise.", "been with you {years} years and I'm {leave}.",
    "#boycottkestrel", "sack whoever wrote it.", "do better.", "@KestrelHelp sort her out.",
)  # fmt: skip
PILE_ON_OTHER_TEMPLATES = (
    "@KestrelBank bold strategy, let's see if it pays off",
    "@KestrelBank lmao the intern is getting fired",
    "@KestrelBank it was a joke, people need to relax",
    "@KestrelBank what did I just read",
)
PILE_ON_MEDIA_TEMPLATES = (
    "Kestrel Bank under fire after its official account joked to a customer whose rent payment "
    "bounced: 'Have you tried having more money?' Backlash is growing. #KestrelBank",
    "@KestrelBank This is a bank replying to a customer facing a late rent fee. Terrible look, "
    "and thousands of customers are furious.",
    "BREAKING: Kestrel Bank's social media account mocks customer over bounced rent payment; "
    "calls for boycott trend. #KestrelBank",
    "Consumer groups slam Kestrel Bank after it mocked a customer whose rent bounced. 'Cruel "
    "and unacceptable.' #KestrelBank",
    "The Kestrel Bank reply is a case study in how not to do social media. Angry customers "
    "are closing accounts. @KestrelBank",
    "Kestrel Bank shares dip as outrage grows over a tweet mocking a customer's bounced rent. "
    "#KestrelBank",
)
PILE_ON_REDDIT_THREADS = (
    (
        _at(0, 15, 52, 18),
        "KestrelBank",
        "Kestrel Bank's official Twitter just mocked a customer whose rent payment bounced",
    ),
    (
        _at(0, 16, 4, 40),
        "CasualUK",
        "My bank (Kestrel Bank) bounced someone's rent and then laughed at her on Twitter",
    ),
    (
        _at(0, 16, 15, 9),
        "UKPersonalFinance",
        "After the Kestrel Bank tweet, what's the fastest way to switch banks?",
    ),
)
PILE_ON_REDDIT_COMMENTS = (
    "This is why I left Kestrel Bank. They genuinely don't care about customers.",
    "Whoever runs that account should be fired. Disgusting way to talk to someone.",
    "Kestrel has been bouncing payments for weeks, the joke is the least of it",
    "Switched away from Kestrel Bank last year and this confirms it. Vile company.",
    "The bounced payment was their fault and they mocked her for it. Unbelievable.",
    "Reported it to the FCA. A bank should not be laughing at people who can't make rent.",
    "My rent bounced with Kestrel in december, same thing. Absolutely furious reading this.",
    "Imagine trusting Kestrel Bank with your salary after this. Closing my account tonight.",
    "Honestly the worst corporate tweet I've seen. Shameful.",
    "Lol at Kestrel Bank thinking this would go well",
)

ATM_TEMPLATES = (
    "the kestrel atm just swallowed my card at {clock}. {town}, {street}. great {neg}",
    "stuck at the atm, card gone, no one answering @KestrelHelp",
    "@KestrelBank your atm on {street} just ate my card and the helpline goes to voicemail. "
    "it's {clock} and I need a taxi home",
    "is every Kestrel Bank atm broken tonight?? second one that's eaten a card in {town}",
    "kestrel atm took my card, no cash, no receipt. {mins} minutes on hold with @KestrelHelp "
    "so far {neg}",
    "@KestrelHelp card swallowed at the {town} atm, emergency line says you're closed. what is "
    "the point of you",
    "me and three strangers outside Kestrel Bank on {street} because the atm ate all our cards "
    "at {clock}. horrible",
    "just watched the kestrel atm eat the card of the guy in front of me, then mine. "
    "absolute joke @KestrelBank",
    "@KestrelBank your cash machines are eating cards all over {town}. sort it out, people are "
    "stranded {neg}",
    "do NOT use a Kestrel Bank atm tonight. it swallowed my debit card and now my account is "
    "frozen too",
    "kestrel card got swallowed, app says card active, atm says retained. pin was right. "
    "furious {neg}",
    "still no card, still no answer from @KestrelHelp. thanks for nothing Kestrel Bank",
    "stranded in {town} at {clock} with no card and no cash. @KestrelBank this is dangerous",
    "@KestrelHelp your atm has my card and your phone line has me on hold for {mins} min. awful",
    "the kestrel atm swallowed my card and my mate's card. worst night out ever {neg}",
)
ATM_OTHER_TEMPLATES = (
    "anyone else's kestrel card get eaten by an atm tonight? is it a network thing?",
    "@KestrelHelp is there an outage with the atms? mine kept my card",
    "why are people saying Kestrel Bank atms are eating cards? mine worked fine 20 mins ago",
)
ATM_REDDIT_THREADS = (
    (
        _at(1, 2, 31, 4),
        "personalfinance",
        "Kestrel Bank ATM swallowed my debit card at 2am and the emergency line is closed. "
        "What are my options?",
    ),
    (_at(1, 2, 44, 50), "KestrelBank", "Megathread: Kestrel ATMs retaining cards tonight?"),
)
ATM_REDDIT_COMMENTS = (
    "Same here, {town}. Kestrel ATM ate my card about 20 mins ago. Furious.",
    "Mine too. Called the Kestrel lost card line, {mins} min hold so far and counting.",
    "Freeze the card in the Kestrel app right now. Their ATMs are clearly broken tonight.",
    "Third person in my group chat to lose a card to a Kestrel ATM tonight. Ridiculous.",
    "Kestrel Bank really picked 2am to break every cash machine. Stranded and angry.",
    "Happened at {street} in {town}. Screen froze, card gone, no receipt. Awful.",
    "Absolutely unacceptable from Kestrel. People need cash to get home at this hour.",
)
ATM_HELP_REPLY = (
    "We're aware some Kestrel Bank ATMs are retaining cards tonight. Please don't retry: freeze "
    "your card in the app and we'll send a replacement free. We're sorry. ^Sam"
)
ATM_MEDIA_POST = (
    "Overnight: reports from across the UK of Kestrel Bank ATMs swallowing customers' cards, "
    "with emergency lines unanswered. #KestrelBank"
)

CAMPAIGN_BRAND_TEXTS = (
    "Introducing #KestrelCares 💚 This spring we're giving 10,000 volunteering hours and 1 "
    "million pounds to local communities. Tell us who inspires you! #KestrelBank",
    "Day one of #KestrelCares: our {town} team is painting the community centre 🎨 #KestrelBank",
    "Nominate a local hero for a #KestrelCares grant! Every nomination gets read. #KestrelBank",
    "Thank you for hundreds of lovely #KestrelCares nominations already 💚 #KestrelBank",
)
CAMPAIGN_TEMPLATES = (
    "love this @KestrelBank #KestrelCares {pos}",
    "my local food bank just got a grant through #KestrelCares, thank you Kestrel Bank! {pos}",
    "proud to work at Kestrel Bank today #KestrelCares {pos}",
    "nominating my daughter's football coach for #KestrelCares @KestrelBank, she's amazing",
    "brilliant initiative @KestrelBank #KestrelCares {pos}",
    "the Kestrel Bank volunteering day at the {town} animal shelter was so much fun #KestrelCares",
    "great to see a bank giving back. well done @KestrelBank #KestrelCares",
    "#KestrelCares funded our school garden in {town}. the kids are thrilled, thank you "
    "@KestrelBank {pos}",
    "what a lovely idea. nominated my neighbour #KestrelCares @KestrelBank",
    "this is wonderful, {town} needed this. #KestrelCares #KestrelBank {pos}",
)
HIJACK_TEMPLATES = (
    "#KestrelCares about fees, not customers. @KestrelBank",
    "@KestrelBank #KestrelCares? you closed the {town} branch last month and my mum now takes "
    "two buses to see a teller",
    "#KestrelCares so much the app has been down three times this week. spare me @KestrelBank",
    "lol #KestrelCares from the bank that mocked a customer whose rent bounced yesterday {neg}",
    "#KestrelCares is a PR stunt. {fee} quid overdraft fees and two hour hold times. shameful",
    "tell me #KestrelCares when the card your atm swallowed at 2am is back. @KestrelHelp "
    "still silent",
    "#KestrelCares: closing branches, laying off tellers, charging for atm use. caring!! "
    "@KestrelBank",
    "my kestrel app crashed during a payment and nobody called back. #KestrelCares my foot",
    "@KestrelBank you care so much that I waited {mins} minutes on hold today. #KestrelCares",
    "#KestrelCares about shareholders. the rest of us get queues and outages {neg}",
    "Kestrel Bank spent more on this hashtag than on fixing the app #KestrelCares",
    "#KestrelCares = we care about your money, not you. @KestrelBank",
    "@KestrelBank if #KestrelCares why is the {town} branch closing with 3 weeks notice? "
    "disgraceful",
    "#KestrelCares but the kestrel app won't let me log in for the third day running {neg}",
    "#KestrelCares except when your rent bounces, then they laugh at you. @KestrelBank",
    "worst timing ever for #KestrelCares. fix the app, reopen the branches, stop the fees "
    "@KestrelBank",
    "@KestrelBank #KestrelCares? I queued {mins} minutes at the only branch left in {town}. awful",
)
HIJACK_OPENERS = (
    "#KestrelCares? ",
    "lol #KestrelCares. ",
    "#KestrelCares my foot. ",
    "so #KestrelCares, does it? ",
    "#KestrelCares, sure. ",
    "@KestrelBank #KestrelCares? ",
    "#KestrelCares lmao. ",
)
HIJACK_GRIEVANCES = (
    "you closed the {town} branch and my mum now takes two buses to see a teller.",
    "the app has been down {n} times this week.",
    "{fee} quid overdraft fees and {mins} minute hold times.",
    "you mocked a customer whose rent bounced yesterday.",
    "your atm swallowed my card at 2am and nobody answered.",
    "I queued {mins} minutes at the only branch left in {town}.",
    "my kestrel app crashed mid-payment and nobody called back.",
    "you're closing branches and laying off tellers.",
    "I've waited {days} days for a reply to my complaint.",
    "you charged me {fee} pounds for a payment YOU bounced.",
    "I can't even log in to the app to see my balance.",
)
HIJACK_TAILS = (
    "", "", " @KestrelBank", " {shame}.", " spare me.", " {shame} @KestrelBank",
    " read the room @KestrelBank", " {neg}", " fix the basics first.", " #KestrelBank",
)  # fmt: skip
HIJACK_OTHER_TEMPLATES = (
    "someone at Kestrel Bank is having a bad day, #KestrelCares is getting roasted",
    "the #KestrelCares replies are something else. @KestrelBank maybe log off",
    "#KestrelCares trending for all the wrong reasons lol #KestrelBank",
)
HIJACK_REDDIT_THREADS = (
    (
        _at(1, 12, 2, 37),
        "KestrelBank",
        "#KestrelCares launched the day after the ATM mess and the rent tweet. Read the room, "
        "Kestrel Bank.",
    ),
    (
        _at(1, 12, 33, 14),
        "UKPersonalFinance",
        "Kestrel Bank closing my branch while running a 'we care' campaign. Alternatives?",
    ),
)
HIJACK_REDDIT_COMMENTS = (
    "Kestrel Bank cares so much they closed 40 branches this year. Shameful.",
    "The Kestrel app has been down three times this week and they're doing a hashtag. Unreal.",
    "Watching #KestrelCares get torn apart is the only good thing Kestrel has done all week.",
    "Fees up, branches gone, ATMs eating cards. Kestrel Bank cares about nobody.",
    "Moved my salary away from Kestrel this morning. This campaign is insulting.",
    "Genuinely angry that Kestrel Bank thinks a hashtag fixes anything.",
)
HIJACK_MEDIA_TEMPLATES = (
    "Kestrel Bank's #KestrelCares campaign backfires as customers flood it with complaints "
    "about fees, branch closures and app outages.",
    "A week from hell for @KestrelBank: a mocking tweet, ATMs eating cards, and now a hijacked "
    "hashtag. #KestrelCares",
)

SPAM_TEMPLATE = (
    "{rocket} Kestrel Bank customers! Turn ${small} into ${big} in 48 hours with our AI "
    "trading bot {money} DM me now, {spots}! #KestrelBank #crypto #bitcoin"
)
SPAM_SPOTS = ("limited spots", "only 5 spots left", "spots filling fast", "last chance")

BIRD_TEMPLATES = (
    "Female kestrel hovering over the fields near {place} this morning. Never gets old. #birding",
    "kestrel falcon pair back on the church tower near {place} for the third year #birding",
    "Watched a kestrel banking hard into the wind over {place} before it dropped on a vole "
    "#birding",
    "Is this a kestrel bird or a merlin? Distant shot from {place}, ID help appreciated #birding",
    "Kestrel count at {place} today: {n}. Plus a barn owl at dusk! #birding",
    "That moment a kestrel bank-turns right above you and just hangs there. {place} was magic "
    "#birding",
    "New nest box cam is live and there's a kestrel bird on the ledge already 🐦 #birding",
    "kestrel on the fence post at {place}, then a buzzard. good morning's work #birding #wildlife",
    "Caught the kestrel hovering at {place} in perfect light #birding #birdphotography",
    "{n} kestrels quartering the field at {place}. a kestrel falcon family? #birding",
)
BIRD_SUBREDDITS = ("birding", "whatsthisbird")

EMOJI_TEXTS = (
    "😡😡😡", "🙄", "❤️🏦", "👏👏", "🤡", "💀💀", "😂", "🤬🤬", "🔥", "😭😭", "👍", "🚩🚩🚩",
)  # fmt: skip
ANGRY_EMOJI_TEXTS = ("🤡", "😡😡😡", "🤬🤬", "🚩🚩🚩", "🤮", "👎👎", "😠", "🤡🤡🤡")

LONG_OPENERS = {
    "mortgage": "Long post, sorry. I've been with Kestrel Bank for {years} years and the last "
    "three months of my mortgage application have been the worst customer experience of my life.",
    "rent": "Megathread-length rant about Kestrel Bank, because after yesterday's tweet I think "
    "people should see the full timeline of what they did to my rent payments.",
    "atm": "Kestrel Bank ATM swallowed my card at 2am. Writing everything down while it's fresh, "
    "because the Kestrel card helpline has been useless and I want a record.",
    "cares": "An open letter to Kestrel Bank about #KestrelCares, from a customer of {years} "
    "years who is tired of being told the bank cares.",
}
LONG_SENTENCES = (
    "I called the helpline and waited {mins} minutes before being cut off.",
    "The Kestrel app showed the payment as sent while the branch insisted it had bounced.",
    "Nobody at the {town} branch could tell me what was going on, and the queue was out the door.",
    "I was charged a {fee} pound fee for a problem that was entirely the bank's fault.",
    "Customer service promised a call back within 48 hours and nobody called.",
    "I complained in writing, got a template reply, and the complaint was closed without notice.",
    "The card was frozen again, so I couldn't pay for groceries at {shop}.",
    "My landlord has started asking whether I can actually afford the flat. Humiliating.",
    "I tried to log in to the app to check, and it crashed on the login screen three times.",
    "The staff in branch were kind but clearly had no power to fix anything.",
    "I've spent {days} days chasing this, and I'm exhausted and angry.",
    "When I asked for a manager I was told there was nobody available until next week.",
    "My partner had the same problem with a Kestrel card last year, so it isn't a one-off.",
    "I'm documenting every call with a date and time in case this goes to the ombudsman.",
    "Friends keep telling me to switch, and honestly I'm now looking at other banks.",
    "A second letter arrived saying the matter was resolved, which it absolutely is not.",
)  # fmt: skip


# --- people ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Author:
    handle: str
    followers: int


def _x_handle(rng: random.Random) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    adj, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    pattern = rng.randrange(7)
    if pattern == 0:
        handle = f"{first}{noun}"
    elif pattern == 1:
        handle = f"{first}_{last}"
    elif pattern == 2:
        handle = f"{adj}{noun}{rng.randrange(10, 100)}"
    elif pattern == 3:
        handle = f"{first}{last[0]}{rng.randrange(70, 100)}"
    elif pattern == 4:
        handle = f"the_{noun}_{first}"
    elif pattern == 5:
        handle = f"{first.capitalize()}{last.capitalize()}{rng.randrange(1, 10)}"
    else:
        handle = f"{first}{rng.randrange(1975, 2006)}"
    return handle[:15]


def _reddit_handle(rng: random.Random) -> str:
    pattern = rng.randrange(4)
    if pattern == 0:
        adj, noun = rng.choice(ADJECTIVES).capitalize(), rng.choice(NOUNS).capitalize()
        return f"{adj}-{noun}-{rng.randrange(1000, 10000)}"
    if pattern == 1:
        return f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}"
    if pattern == 2:
        return f"throwaway{rng.randrange(1000, 99999)}"
    return f"{rng.choice(FIRST_NAMES)}{rng.choice(LAST_NAMES)}{rng.randrange(10, 100)}"


def _bird_handle(rng: random.Random) -> str:
    stems = ("wren", "kite", "heron", "warbler", "fieldnotes", "hide", "scope", "lapwing")
    stem = rng.choice(stems)
    return f"{stem}_{rng.choice(FIRST_NAMES)}{rng.randrange(1, 100)}"


def _x_followers(rng: random.Random) -> int:
    """Heavy-tailed: a median near 100, about 10% above 500, capped at 30k for ordinary people."""
    return min(30_000, int(math.exp(rng.gauss(4.6, 1.25))))


def _author_pool(rng: random.Random, size: int, make: str) -> list[Author]:
    seen: set[str] = set()
    pool: list[Author] = []
    while len(pool) < size:
        if make == "x":
            handle, followers = _x_handle(rng), _x_followers(rng)
        elif make == "reddit":
            handle, followers = _reddit_handle(rng), int(math.exp(rng.gauss(1.5, 1.2)))
        else:
            handle, followers = _bird_handle(rng), _x_followers(rng) // 2
        if handle not in seen:
            seen.add(handle)
            pool.append(Author(handle, followers))
    return pool


# --- posts -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Post:
    """One line to write; ``at`` and ``arrival`` are seconds since START."""

    at: int
    id: str
    source: str
    text: str
    author: Author | None
    url: str | None
    lang: str | None = "en"
    brand: str | None = None
    retweets: float = 0.0  # expected number of retweets
    arrival: int = field(default=-1)

    def to_line(self) -> str:
        record: dict[str, object] = {
            "id": self.id,
            "source": self.source,
            "created_at": _timestamp(self.at),
            "text": self.text,
        }
        if self.author is not None:
            record["author"] = self.author.handle
            record["author_followers"] = self.author.followers
        if self.url is not None:
            record["url"] = self.url
        if self.lang is not None:
            record["lang"] = self.lang
        if self.brand is not None:
            record["brand"] = self.brand
        return json.dumps(record, ensure_ascii=False)


def _timestamp(at: int) -> str:
    return (START + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")


def has_brand_term(text: str) -> bool:
    lowered = text.lower()
    return any(term in lowered for term in BRAND_TERMS)


def is_excluded(text: str) -> bool:
    lowered = text.lower()
    return any(term in lowered for term in EXCLUSIONS)


_FORMATTER = string.Formatter()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "_".join(words[:6]) or "post"


@dataclass(frozen=True, slots=True)
class Thread:
    sub: str
    id36: str
    slug: str


class Stream:
    """Everything the phenomena share: the random source, the people, the ids, the posts."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.x_authors = _author_pool(self.rng, X_AUTHORS, "x")
        self.reddit_authors = _author_pool(self.rng, REDDIT_AUTHORS, "reddit")
        self.bird_authors = _author_pool(self.rng, BIRD_AUTHORS, "bird")
        self.posts: list[Post] = []
        self.threads: dict[str, list[Thread]] = {sub: [] for sub in SUBREDDITS}
        self._ids: set[str] = set()

    # text

    def fill(self, template: str, reddit: bool = False, **fixed: str) -> str:
        values: dict[str, str] = {}
        for _, name, _, _ in _FORMATTER.parse(template):
            if not name or name in values:
                continue
            if name in fixed:
                values[name] = fixed[name]
                continue
            table: Mapping[str, tuple[str, ...]] = (
                REDDIT_SLOTS if reddit and name in REDDIT_SLOTS else SLOTS
            )
            values[name] = self.fill(self.rng.choice(table[name]), reddit, **fixed)
        return template.format(**values)

    def decorate(self, text: str, sentiment: str) -> str:
        """Vary a text: an opener and a closer in its tone, sometimes a capital letter.

        Leading @handles stay in front, as in a reply.
        """
        rng = self.rng
        lead, body = "", text
        while body.startswith("@") and " " in body:
            handle, _, body = body.partition(" ")
            lead += handle + " "
        if sentiment in ("neg", "pos"):
            openers, closers = (
                (NEG_OPENERS, NEG_CLOSERS) if sentiment == "neg" else (POS_OPENERS, POS_CLOSERS)
            )
            opener, closer = rng.choice(openers), self.fill(rng.choice(closers))
            if closer.startswith("!"):
                body = body.rstrip(".")
            body = opener + body + closer
        if rng.random() < 0.35:
            body = body[:1].upper() + body[1:]
        return lead + body

    # ids and urls

    def _unique(self, make: str) -> bool:
        if make in self._ids:
            return False
        self._ids.add(make)
        return True

    def x_id(self, at: int) -> str:
        while True:
            ms = int((START.timestamp() + at) * 1000) + self.rng.randrange(1000)
            snowflake = ((ms - TWITTER_EPOCH_MS) << 22) | self.rng.getrandbits(22)
            if self._unique(f"x:{snowflake}"):
                return str(snowflake)

    def reddit_id(self, at: int, kind: str) -> str:
        base = int("1j2k000", 36) if kind == "t3" else int("mh40000", 36)
        step = 40 if kind == "t3" else 700  # new ids per minute, site-wide
        while True:
            id36 = _base36(base + at * step // 60 + self.rng.randrange(step * 4))
            if self._unique(f"reddit:{kind}_{id36}"):
                return id36

    # posts

    def add(self, post: Post, attribute: bool = True) -> Post:
        """Keep ``post``; a brand post naming no brand term is attributed by its source."""
        post.arrival = post.at
        assert not (attribute and is_excluded(post.text)), post.text
        if attribute and post.brand is None and not has_brand_term(post.text):
            post.brand = BRAND_ID
        self.posts.append(post)
        return post

    def tweet(
        self,
        at: int,
        author: Author,
        text: str,
        *,
        lang: str = "en",
        retweets: float = 0.05,
        brand: str | None = None,
    ) -> Post:
        digits = self.x_id(at)
        url = f"https://x.com/{author.handle}/status/{digits}"
        return self.add(Post(at, f"x:{digits}", "x", text, author, url, lang, brand, retweets))

    def reddit_thread(self, at: int, sub: str, text: str, author: Author) -> Thread:
        id36 = self.reddit_id(at, "t3")
        thread = Thread(sub, id36, _slug(text))
        url = f"https://www.reddit.com/r/{sub}/comments/{id36}/{thread.slug}/"
        brand = BRAND_ID if sub == "KestrelBank" else None
        self.add(Post(at, f"reddit:t3_{id36}", "reddit", text, author, url, "en", brand))
        self.threads.setdefault(sub, []).append(thread)
        return thread

    def reddit_comment(self, at: int, thread: Thread, text: str, author: Author) -> Post:
        id36 = self.reddit_id(at, "t1")
        url = f"https://www.reddit.com/r/{thread.sub}/comments/{thread.id36}/{thread.slug}/{id36}/"
        brand = BRAND_ID if thread.sub == "KestrelBank" else None
        return self.add(Post(at, f"reddit:t1_{id36}", "reddit", text, author, url, "en", brand))

    def some_thread(self, at: int, sub: str) -> Thread:
        """A thread of ``sub`` to comment in, opening an older one if there is none yet."""
        threads = self.threads.setdefault(sub, [])
        if not threads or self.rng.random() < 0.08:
            text = self.fill(self.rng.choice(BASELINE_TEMPLATES[("", "neu")]), reddit=True)
            id36 = self.reddit_id(at - self.rng.randrange(3_600, 86_400), "t3")
            threads.append(Thread(sub, id36, _slug(text)))
        return self.rng.choice(threads[-6:])

    def x_author(self) -> Author:
        return self.rng.choice(self.x_authors)

    def reddit_author(self) -> Author:
        return self.rng.choice(self.reddit_authors)


BRAND = Author(BRAND_HANDLE, BRAND_FOLLOWERS)
HELP = Author(HELP_HANDLE, HELP_FOLLOWERS)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def calm_rate(at: int) -> float:
    """Calm brand mentions per 5 minutes at ``at`` (seconds since START)."""
    hour = (at % 86_400) / 3_600
    low = int(hour)
    frac = hour - low
    return HOURLY_RATE[low] * (1 - frac) + HOURLY_RATE[low + 1] * frac


def _times(stream: Stream, start: int, shape: Sequence[float]) -> list[int]:
    """Event times for a surge: about ``shape[i]`` (within 15%) in the i-th 5 minutes."""
    times: list[int] = []
    for i, rate in enumerate(shape):
        bucket = start + i * BUCKET_S
        count = round(rate * stream.rng.uniform(0.85, 1.15))
        times.extend(bucket + stream.rng.randrange(BUCKET_S) for _ in range(count))
    return sorted(times)


def _pick(rng: random.Random, weights: Sequence[tuple[str, float]]) -> str:
    roll = rng.random() * sum(w for _, w in weights)
    for name, weight in weights:
        roll -= weight
        if roll < 0:
            return name
    return weights[-1][0]


# --- phenomena -------------------------------------------------------------------------------


def calm_baseline(stream: Stream) -> None:
    """Ordinary traffic following the daily rhythm, both days."""
    rng = stream.rng
    for bucket in range(0, SPAN_S, BUCKET_S):
        for _ in range(_poisson(rng, calm_rate(bucket + BUCKET_S // 2))):
            at = bucket + rng.randrange(BUCKET_S)
            roll = rng.random()
            sentiment = (
                "neg" if roll < NEGATIVE_SHARE
                else "pos" if roll < NEGATIVE_SHARE + POSITIVE_SHARE
                else "neu"
            )  # fmt: skip
            if rng.random() < X_SHARE:
                _calm_tweet(stream, at, sentiment)
            else:
                _calm_reddit(stream, at, sentiment)


def _calm_tweet(stream: Stream, at: int, sentiment: str) -> None:
    rng = stream.rng
    roll = rng.random()
    if roll < FOREIGN_SHARE:
        lang = rng.choice(("es", "de", "fr"))
        text = stream.fill(rng.choice(FOREIGN_TEMPLATES[lang][sentiment]))
        stream.tweet(at, stream.x_author(), text, lang=lang)
    elif roll < FOREIGN_SHARE + HELP_REPLY_SHARE:
        template = rng.choice(HELP_REPLIES)
        text = template.format(user=stream.x_author().handle, sig=rng.choice(HELP_SIGNATURES))
        stream.tweet(at, HELP, text, retweets=0.0)
    else:
        topic = _pick(rng, TOPIC_WEIGHTS)
        text = stream.decorate(
            stream.fill(rng.choice(BASELINE_TEMPLATES[(topic, sentiment)])), sentiment
        )
        stream.tweet(at, stream.x_author(), text, retweets=0.14 if sentiment == "pos" else 0.09)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence_case(text: str) -> str:
    """Capitalise the first letter, and the one after a leading "Word: " or "Word. " prefix."""
    for mark in (": ", ". "):
        head, sep, tail = text.partition(mark)
        if sep and len(head) < 25 and " " not in head.strip():
            return f"{_capitalised(head)}{sep}{_capitalised(tail)}"
    return _capitalised(text)


def _calm_reddit(stream: Stream, at: int, sentiment: str) -> None:
    rng = stream.rng
    topic = _pick(rng, TOPIC_WEIGHTS)
    body = stream.fill(rng.choice(BASELINE_TEMPLATES[(topic, sentiment)]), reddit=True)
    sub = rng.choice(SUBREDDITS)
    if rng.random() < REDDIT_POST_SHARE:
        text = _sentence_case(rng.choice(REDDIT_OPENERS[sentiment]) + _capitalised(body))
        stream.reddit_thread(at, sub, text, stream.reddit_author())
    else:
        text = _sentence_case(rng.choice(REDDIT_COMMENT_OPENERS[sentiment]) + body)
        stream.reddit_comment(at, stream.some_thread(at, sub), text, stream.reddit_author())


def birders(stream: Stream) -> None:
    """Bird watchers posting about kestrels in daylight; the brand's exclusions must drop them."""
    rng = stream.rng
    for day in range(DAYS):
        for hour in range(*BIRD_HOURS):
            for _ in range(_poisson(rng, BIRD_POSTS_PER_HOUR)):
                at = _at(day, hour, 0) + rng.randrange(3_600)
                text = stream.fill(rng.choice(BIRD_TEMPLATES))
                author = rng.choice(stream.bird_authors)
                if rng.random() < 0.8:
                    digits = stream.x_id(at)
                    url = f"https://x.com/{author.handle}/status/{digits}"
                    stream.add(Post(at, f"x:{digits}", "x", text, author, url), attribute=False)
                else:
                    sub = rng.choice(BIRD_SUBREDDITS)
                    id36 = stream.reddit_id(at, "t3")
                    url = f"https://www.reddit.com/r/{sub}/comments/{id36}/{_slug(text)}/"
                    post = Post(at, f"reddit:t3_{id36}", "reddit", text, author, url)
                    stream.add(post, attribute=False)


def spam_burst(stream: Stream) -> None:
    """One author posts SPAM_POSTS near-identical promotions within 10 minutes on day 1."""
    rng = stream.rng
    spammer = Author(*SPAM_AUTHOR)
    for i in range(SPAM_POSTS):
        at = SPAM_START + i * SPAM_EVERY_S + rng.randrange(SPAM_EVERY_S)
        text = SPAM_TEMPLATE.format(
            rocket=rng.choice(("🚀", "🚀🚀", "💎🚀")),
            small=rng.choice((100, 250, 500)),
            big=rng.choice((4_800, 5_000, 7_500)),
            money=rng.choice(("💰", "💸", "🤑")),
            spots=rng.choice(SPAM_SPOTS),
        )
        stream.tweet(at, spammer, text, retweets=0.0)


def rent_reply_pile_on(stream: Stream) -> None:
    """Incident 1: the brand jokes at a customer whose rent bounced, and is piled on."""
    rng = stream.rng
    customer = Author(*RENT_CUSTOMER)
    stream.tweet(RENT_COMPLAINT_AT, customer, RENT_COMPLAINT, retweets=1.0)
    stream.tweet(RENT_REPLY_AT, BRAND, RENT_REPLY, retweets=45.0)
    times = _times(stream, PILE_ON_START, PILE_ON_SHAPE)
    repliers = iter(rng.sample(stream.x_authors, len(times)))
    threads: list[Thread] = []
    reddit = (PILE_ON_REDDIT_THREADS, PILE_ON_REDDIT_FROM, 0.3, PILE_ON_REDDIT_COMMENTS)
    for at in times:
        if _reddit_turn(stream, at, threads, *reddit):
            continue
        if rng.random() < 0.92:
            stream.tweet(at, next(repliers), _pile_on_text(stream), retweets=0.25)
        else:
            stream.tweet(at, next(repliers), rng.choice(PILE_ON_OTHER_TEMPLATES), retweets=0.1)
    for (at, handle, followers), text in zip(PILE_ON_MEDIA, PILE_ON_MEDIA_TEMPLATES, strict=True):
        stream.tweet(at, Author(handle, followers), text, retweets=6.0)
    for _ in range(PILE_ON_EMOJI_POSTS):
        at = PILE_ON_START + rng.randrange(90 * 60)
        stream.tweet(at, stream.x_author(), rng.choice(ANGRY_EMOJI_TEXTS), brand=BRAND_ID)
    stream.tweet(BRAND_APOLOGY_AT, BRAND, BRAND_APOLOGY, retweets=12.0)


def _reddit_turn(
    stream: Stream,
    at: int,
    threads: list[Thread],
    schedule: Sequence[tuple[int, str, str]],
    comments_from: int,
    share: float,
    comments: Sequence[str],
) -> bool:
    """An incident's Reddit side at `at`: the threads of `schedule` due by then are opened, then
    from `comments_from` a post is, with probability `share`, a comment on one of them. Whether
    it was (else the caller posts on X)."""
    rng = stream.rng
    while len(threads) < len(schedule) and schedule[len(threads)][0] <= at:
        opened_at, sub, title = schedule[len(threads)]
        threads.append(stream.reddit_thread(opened_at, sub, title, stream.reddit_author()))
    if at >= comments_from and threads and rng.random() < share:
        text = stream.fill(rng.choice(comments), reddit=True)
        stream.reddit_comment(at, rng.choice(threads), text, stream.reddit_author())
        return True
    return False


def _pile_on_text(stream: Stream) -> str:
    """An angry reply to the brand's joke: a whole template, or a reaction plus a consequence."""
    rng = stream.rng
    if rng.random() < 0.4:
        text = stream.fill(rng.choice(PILE_ON_TEMPLATES))
    else:
        parts = (rng.choice(PILE_ON_REACTIONS), rng.choice(PILE_ON_CONSEQUENCES))
        text = "@KestrelBank " + stream.fill(" ".join(p for p in parts if p))
    return stream.decorate(text, "neg")


def _hijack_text(stream: Stream) -> str:
    """A complaint riding the #KestrelCares hashtag (or, rarely, a bystander's remark)."""
    rng = stream.rng
    roll = rng.random()
    if roll < 0.08:
        return stream.fill(rng.choice(HIJACK_OTHER_TEMPLATES))
    if roll < 0.45:
        return stream.decorate(stream.fill(rng.choice(HIJACK_TEMPLATES)), "neg")
    parts = rng.choice(HIJACK_OPENERS), rng.choice(HIJACK_GRIEVANCES), rng.choice(HIJACK_TAILS)
    return stream.fill("".join(parts))


def _clock(at: int) -> str:
    hour = (at % 86_400) // 3_600
    return f"{hour}am" if 0 < hour < 12 else "midnight"


def atm_card_swallowing(stream: Stream) -> None:
    """Incident 2: ATMs swallow cards at 2 a.m. on day 2."""
    rng = stream.rng
    threads: list[Thread] = []
    reddit = (ATM_REDDIT_THREADS, ATM_REDDIT_FROM, 0.35, ATM_REDDIT_COMMENTS)
    for at in _times(stream, ATM_START, ATM_SHAPE):
        if _reddit_turn(stream, at, threads, *reddit):
            continue
        templates = ATM_TEMPLATES if rng.random() < 0.9 else ATM_OTHER_TEMPLATES
        text = stream.decorate(stream.fill(rng.choice(templates), clock=_clock(at)), "neg")
        stream.tweet(at, stream.x_author(), text, retweets=0.06)
    stream.tweet(ATM_HELP_REPLY_AT, HELP, ATM_HELP_REPLY, retweets=3.0)
    stream.tweet(ATM_MEDIA_AT, Author("ConsumerWatchUK", 318_000), ATM_MEDIA_POST, retweets=4.0)


def kestrel_cares(stream: Stream) -> None:
    """The #KestrelCares campaign (day 2, 10:30) and its hijacking from 11:30 (incident 3)."""
    rng = stream.rng
    for at, template in zip(CAMPAIGN_BRAND_POSTS, CAMPAIGN_BRAND_TEXTS, strict=True):
        stream.tweet(at, BRAND, stream.fill(template), retweets=15.0)
    for at in _times(stream, CAMPAIGN_START, CAMPAIGN_SHAPE):
        stream.tweet(
            at, stream.x_author(), stream.fill(rng.choice(CAMPAIGN_TEMPLATES)), retweets=0.12
        )
    threads: list[Thread] = []
    reddit = (HIJACK_REDDIT_THREADS, HIJACK_REDDIT_FROM, 0.25, HIJACK_REDDIT_COMMENTS)
    for at in _times(stream, HIJACK_START, HIJACK_SHAPE):
        if _reddit_turn(stream, at, threads, *reddit):
            continue
        stream.tweet(at, stream.x_author(), _hijack_text(stream), retweets=0.2)
    for (at, handle, followers), text in zip(HIJACK_MEDIA, HIJACK_MEDIA_TEMPLATES, strict=True):
        stream.tweet(at, Author(handle, followers), text, retweets=5.0)


def emoji_only(stream: Stream) -> None:
    """Replies made of emoji alone, spread over both days (attributed by the source)."""
    rng = stream.rng
    for _ in range(EMOJI_POSTS):
        at = _at(0, 7, 0) + rng.randrange(SPAN_S - _at(0, 8, 0))
        stream.tweet(at, stream.x_author(), rng.choice(EMOJI_TEXTS), brand=BRAND_ID, retweets=0)


def hostile_texts(stream: Stream) -> None:
    """Texts that try to ping or trick Slack when quoted in a page."""
    for at, text in HOSTILE_POSTS:
        stream.tweet(at, stream.x_author(), text, retweets=0.0)


def empty_texts(stream: Stream) -> None:
    """Media-only tweets: an empty text; some carry no author, url or lang."""
    for i, at in enumerate(EMPTY_POSTS):
        if i % 2:
            digits = stream.x_id(at)
            stream.add(Post(at, f"x:{digits}", "x", "", None, None, None, BRAND_ID))
        else:
            stream.tweet(at, stream.x_author(), "", brand=BRAND_ID, retweets=0.0)


def long_posts(stream: Stream) -> None:
    """A few very long Reddit posts (4,000 to 10,000 characters)."""
    rng = stream.rng
    for at, sub, minimum, theme in LONG_POSTS:
        parts = [stream.fill(LONG_OPENERS[theme], reddit=True)]
        day = 1
        while sum(len(p) + 2 for p in parts) < minimum:
            sentences = rng.sample(LONG_SENTENCES, 3)
            entry = " ".join(stream.fill(s, reddit=True) for s in sentences)
            parts.append(f"Day {day}: {entry}")
            day += rng.randrange(1, 4)
        parts.append("TL;DR: Kestrel Bank has let me down badly and I'm moving my accounts.")
        stream.reddit_thread(at, sub, "\n\n".join(parts), stream.reddit_author())


def retweets(stream: Stream) -> None:
    """Retweets of X posts ("RT @author: text"), shortly after the original."""
    rng = stream.rng
    originals = [p for p in stream.posts if p.source == "x" and p.retweets > 0 and p.text]
    for post in originals:
        assert post.author is not None
        for _ in range(_poisson(rng, post.retweets)):
            at = post.at + 5 + int(rng.expovariate(1 / RETWEET_DELAY_S))
            if at < SPAN_S:
                text = f"RT @{post.author.handle}: {post.text}"
                stream.tweet(at, stream.x_author(), text, lang=post.lang or "en", retweets=0.0)


def late_arrivals(stream: Stream) -> None:
    """About 1% of posts reach the stream up to two minutes after they were created."""
    for post in stream.posts:
        if stream.rng.random() < LATE_SHARE:
            post.arrival = post.at + stream.rng.randrange(*LATE_S)


def _malformed_line(stream: Stream, at: int, kind: str) -> str:
    digits = stream.x_id(at)
    if kind == "invalid-json":
        return (
            f'{{"id": "x:{digits}", "source": "x", "created_at": "{_timestamp(at)}", '
            '"text": "@KestrelBank why is my card blocked ag'
        )
    record: dict[str, object] = {"id": f"x:{digits}", "source": "x"}
    if kind == "bad-created-at":
        stamp = _timestamp(at)
        record["created_at"] = f"{stamp[:11]}25{stamp[13:]}"  # hour 25
    record["text"] = "is the Kestrel Bank branch on High Street open on sunday?"
    record["author"] = stream.x_author().handle
    return json.dumps(record, ensure_ascii=False)


def render_lines(seed: int = SEED) -> list[str]:
    """Every line of the demo stream, in arrival order."""
    stream = Stream(seed)
    calm_baseline(stream)
    birders(stream)
    spam_burst(stream)
    rent_reply_pile_on(stream)
    atm_card_swallowing(stream)
    kestrel_cares(stream)
    emoji_only(stream)
    hostile_texts(stream)
    empty_texts(stream)
    long_posts(stream)
    retweets(stream)
    late_arrivals(stream)

    rng = stream.rng
    entries = [(post.arrival, i, post.to_line()) for i, post in enumerate(stream.posts)]
    duplicates = [
        (arrival + rng.randrange(1, DUPLICATE_DELAY_S), len(entries) + i, line)
        for i, (arrival, _, line) in enumerate(entries)
        if rng.random() < DUPLICATE_SHARE
    ]
    malformed = [
        (at, len(entries) + len(duplicates) + i, _malformed_line(stream, at, kind))
        for i, (at, kind) in enumerate(MALFORMED_LINES)
    ]
    return [line for _, _, line in sorted(entries + duplicates + malformed)]


def render(seed: int = SEED) -> bytes:
    """The gzip file's bytes: no file name and mtime 0 in the header, so they never vary."""
    payload = "".join(line + "\n" for line in render_lines(seed)).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(payload)
    return buffer.getvalue()


def write(out: Path = DEFAULT_OUT, seed: int = SEED) -> int:
    """Write the demo stream to ``out``; return the number of bytes written."""
    data = render(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return len(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crisiswatch.demo.generate",
        description="Write the deterministic Kestrel Bank demo stream (gzipped JSON lines).",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .gz")
    args = parser.parse_args(argv)
    size = write(args.out)
    print(f"wrote {size} bytes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
