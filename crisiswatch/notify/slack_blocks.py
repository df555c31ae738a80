"""Pages as Slack Block Kit: readable on a phone in ten seconds, safe whatever the posts say.

Every string that comes from a post (text, author, URL, terms, source names) is untrusted: it is
cleaned (no control characters), `&`, `<` and `>` are escaped (so no `<!channel>`, `<@U…>` or
masked link survives) and `@` is followed by a zero-width space (so no `@here` word pings).
Pings are built only from the config's ids and, for who resolved an incident, the user id of the
click. Every text is cut to Block Kit's limits, never rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from crisiswatch.config import Route, Settings
from crisiswatch.domain import Incident, Page, PageKind, ScoredMention, Severity, Stage
from crisiswatch.incidents import SEVERITY_ROSE
from crisiswatch.notify.render import clean_text, interactions, representative, totals_text

SECTION_CHARS = 3000
FIELD_CHARS = 2000
HEADER_CHARS = 150
MAX_BLOCKS = 50
VALUE_CHARS = 2000
FALLBACK_CHARS = 3000
POSTS = 5

Block = dict[str, Any]
Acknowledged = tuple[str, datetime]  # (the Slack user id of who acknowledged, when)

# The buttons' action ids: stored in the clicks table and queried there by value (store.py), so
# renaming one needs a migration.
ACK, SNOOZE, RESOLVE, FALSE_ALARM, NOT_NEGATIVE, COMPLAINT = (
    "acknowledge",
    "snooze_1h",
    "resolve",
    "false_alarm",
    "not_negative",
    "complaint",
)
POST_LABELS = {NOT_NEGATIVE: "neutral", COMPLAINT: "negative"}
"""A post's button, and the label the sentiment model learns for the post when it is pressed."""
SEVERITY_ICON = {Severity.INFO: "ℹ️", Severity.WARNING: "⚠️", Severity.CRITICAL: "🚨"}
_STAGE = {Stage.SPARK: "🟡", Stage.FLAME: "🟠", Stage.FIRE: "🔴"}
_KIND = {
    PageKind.OPENED: "🆕 *Opened*",
    PageKind.ESCALATED: "⬆️ *Worse*",
    PageKind.UPDATED: "↗️ *Spreading*",
    PageKind.REMINDER: "🔁 *Still firing*",
    PageKind.RESOLVED: "✅ *Resolved*",
}
_USER = re.compile(r"[UW][A-Z0-9]{2,30}")
_GROUP = re.compile(r"S[A-Z0-9]{2,30}")
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,30}")  # a channel id, shown as a link to it
_RESOLVER = re.compile(f"resolved by ({_USER.pattern})")  # pipeline.resolve's change: a user id
_URL = re.compile(r"https?://[^\s<>|\"`\\]{1,500}")  # no backslash: browsers read one as "/"
# the host a URL goes to, as its letters are (internationalised names in their xn-- form)
_HOST = re.compile(r"https?://(?:[^/?#@]{0,200}@)?([A-Za-z0-9.-]{1,253})(?::\d{1,5})?(?:[/?#]|$)")
_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def escape(text: str) -> str:
    """Untrusted text as inert mrkdwn: no Slack control sequence, no broadcast word."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("@", "@\u200b")


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, never inside an `&amp;` entity."""
    if len(text) <= limit:
        return text
    return _ENTITY_TAIL.sub("", text[: limit - 1]) + "…"


def untrusted(text: str, limit: int) -> str:
    """A post-derived string: one clean line, escaped, at most `limit` characters."""
    return fit(escape(clean_text(text, limit)), limit)


def ping(value: str) -> str:
    """A config entry as a Slack mention: a user (U…/W…), a user group (S…), here or channel."""
    bare = value.strip().lstrip("@")
    if _USER.fullmatch(bare):
        return f"<@{bare}>"
    if _GROUP.fullmatch(bare):
        return f"<!subteam^{bare}>"
    if bare in ("here", "channel"):
        return f"<!{bare}>"
    return escape(bare)  # a name that is not an id is shown, never resolved


def pings(values: Iterable[str]) -> str:
    return " ".join(ping(v) for v in values)


def changes(page: Page, limit: int) -> str:
    """What the page changed, as inert text, except who resolved it: the Slack user id a click
    carried (never post text) becomes a mention."""
    said = [
        f"resolved by {ping(found[1])}"
        if (found := _RESOLVER.fullmatch(change))
        else untrusted(change, limit)
        for change in page.changes
    ]
    return fit("; ".join(said), limit)


def people_for(route: Route | None, severity: Severity) -> list[str]:
    """The config's people to call for this severity on this route."""
    if route is None:
        return []
    return next((list(p) for level, p in route.mention.items() if level == severity.label), [])


def _post_link(url: str | None) -> str:
    """A link to a post that names its site ("open on x.com"): a mention's `url` is untrusted
    (HTTP ingest and replay lines carry their own), and a link must not hide where it goes."""
    clean = clean_text(url or "", 500)
    if not _URL.fullmatch(clean):
        return ""
    host = _HOST.match(clean)
    if host is None:
        return ""
    return f"<{clean.replace('&', '&amp;')}|open on {host.group(1).lower()}>"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": fit(text, limit) or " ", "emoji": True}


def section(text: str) -> Block:
    """A mrkdwn section block, cut to its limit."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text, SECTION_CHARS)}}


def _button(text: str, action: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": _plain(text, 75),
        "action_id": action,
        "value": value[:VALUE_CHARS],
    }
    if style:
        button["style"] = style
    return button


def _time(moment: datetime, zone: ZoneInfo | None = None) -> str:
    """A time in UTC, and in `zone` too (the route's quiet-hours zone, where its people are)
    when that is another."""
    utc = f"{moment:%a %d %b %H:%M} UTC"
    if zone is None or moment.astimezone(zone).utcoffset() == timedelta(0):
        return utc
    local = moment.astimezone(zone)
    day = "" if local.date() == moment.astimezone(UTC).date() else f"{local:%a} "
    return f"{utc} ({day}{local:%H:%M} {local.tzname()})"


def local_zone(route: Route | None) -> ZoneInfo | None:
    """Where the route's people are, as far as the config says: its quiet hours' zone."""
    quiet = route.quiet_hours if route is not None else None
    return ZoneInfo(quiet.timezone) if quiet is not None else None


def elapsed(span: timedelta) -> str:
    """A span in whole minutes, floored (never more than has passed), over two hours with the
    hours apart: '7 min', '2 h 05 min'."""
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def _where(incident: Incident) -> str:
    return untrusted(f"{incident.scope} · on {incident.platforms}", 300)


def headline(page: Page, brand_name: str) -> str:
    """The header: what, how bad, how far it spread, where."""
    incident = page.incident
    if page.kind is PageKind.RESOLVED:
        return fit(
            f"✅ Resolved — {brand_name} (was {incident.severity.label} · {incident.stage.label})",
            HEADER_CHARS,
        )
    return fit(
        f"{SEVERITY_ICON[incident.severity]} {incident.severity.label.upper()} · "
        f"{_STAGE[incident.stage]} {incident.stage.label} — {brand_name}",
        HEADER_CHARS,
    )


def fallback(page: Page, brand_name: str, people: Sequence[str]) -> str:
    """The notification text (a phone's lock screen) and what clients without blocks show."""
    head = headline(page, brand_name)
    text = f"{pings(people)} {head}: {untrusted(page.incident.summary, 500)}".strip()
    return fit(text, FALLBACK_CHARS)


def numbers(incident: Incident) -> list[str]:
    """The why in numbers: volume against its alert level, negative share against usual, the
    rise, reach, and the incident's totals so far."""
    signal = incident.latest
    bucket = signal.bucket
    width = elapsed(bucket.end - bucket.start).replace(" min", "m")
    times = bucket.count / signal.volume_expected if signal.volume_expected >= 0.5 else None
    usual = f" — {times:.1f}× usual" if times and times >= 1.5 else ""
    rise = bucket.count - signal.previous_count
    rate = f" ({rise / signal.previous_count:+.0%})" if signal.previous_count else ""
    trend = "Rising" if rise >= 0 else "Falling"
    about = "" if bucket.exact_reach else "≈"  # estimated from a sample of the authors
    return [
        f"*Volume*\n{bucket.count:,} in {width} vs {signal.volume_expected:,.1f} expected "
        f"(alert level {signal.volume_upper:,.0f}){usual}",
        f"*Negative*\n{bucket.negative_share:.0%} vs usual {signal.negative_expected:.0%} "
        f"({bucket.negative_count:,} posts)",
        f"*{trend}*\n{signal.previous_count:,} → {bucket.count:,} in the last {width}{rate}",
        f"*Reach*\n{about}{bucket.reach:,} followers · {about}{bucket.unique_authors:,} authors",
        *([f"*So far*\n{total}"] if (total := totals_text(incident)) else []),
    ]


def post_block(incident_id: str, number: int, scored: ScoredMention) -> Block:
    """One sample post: who, how far it reaches, what it says, a link, and a button to correct
    its sentiment: Not negative on a post scored negative, Complaint on one that is not."""
    mention = scored.mention
    author = untrusted(mention.author or "unknown", 60)
    link = _post_link(mention.url)
    text = (
        f"*{author}* · {mention.author_followers:,} followers{interactions(mention)}"
        f" · {untrusted(mention.source, 30)} · {scored.negative:.0%} negative"
        f"{' · ' + link if link else ''}\n"
        f"> {untrusted(mention.text, 600)}"
    )
    block = section(text)
    value = orjson.dumps({"incident": incident_id, "mention": mention.id}).decode()
    if len(value) <= VALUE_CHARS:
        label, action = (
            ("Not negative", NOT_NEGATIVE) if scored.is_negative else ("Complaint", COMPLAINT)
        )
        block["accessory"] = _button(label, f"{action}:{number}", value)
    return block


def page_blocks(
    page: Page, brand_name: str, route: Route | None, acknowledged: Acknowledged | None = None
) -> list[Block]:
    """The message that stands for an incident, as of this page, saying who acknowledged it."""
    incident = page.incident
    bucket = incident.latest.bucket
    blocks: list[Block] = [{"type": "header", "text": _plain(headline(page, brand_name), 150)}]
    zone = local_zone(route)
    since = (
        f"since {_time(incident.started_at, zone)} (for {elapsed(page.at - incident.started_at)})"
    )
    who = pings(people_for(route, incident.severity)) if page.kind is PageKind.OPENED else ""
    lines = [f"*{untrusted(incident.summary, 600)}*", f"{_where(incident)} · {since}"]
    if page.held_until is not None:
        lines.append(
            f"⏸ Held by the route's quiet hours: decided {_time(page.at, zone)}, sent as they "
            f"ended ({_time(page.held_until, zone)})"
        )
    if acknowledged is not None:
        lines.append(f"✔️ Acknowledged by {ping(acknowledged[0])} {_time(acknowledged[1], zone)}")
    blocks.append(section("\n".join([who, *lines] if who else lines)))
    if page.kind is PageKind.RESOLVED:
        blocks.append(
            section(
                f"Resolved {_time(page.at, zone)}; peak {incident.peak_count:,} mentions per "
                f"bucket{'; in all ' + total if (total := totals_text(incident)) else ''}. "
                f"{changes(page, 500)}"
            )
        )
        # wrong all along? said after the resolution too, it still teaches the detectors
        blocks.append(
            {
                "type": "actions",
                "elements": [_button("False alarm", FALSE_ALARM, incident.id, "danger")],
            }
        )
    else:
        fields = [{"type": "mrkdwn", "text": fit(f, FIELD_CHARS)} for f in numbers(incident)]
        blocks.append({"type": "section", "fields": fields})
        why = "\n".join(f"• {untrusted(reason, 400)}" for reason in incident.reasons[:6])
        terms = " · ".join(untrusted(term, 40) for term, _ in bucket.top_terms[:8])
        blocks.append(
            section(
                f"*Why*\n{why}\n*Rules* {untrusted(', '.join(incident.rules), 300)}"
                + (f"\n*Top terms* {terms}" if terms else "")
            )
        )
        samples = representative(bucket.samples, POSTS)
        if samples:
            blocks.append({"type": "divider"})
            blocks.extend(post_block(incident.id, n, s) for n, s in enumerate(samples))
        buttons = [] if acknowledged else [_button("Acknowledge", ACK, incident.id, "primary")]
        buttons += [
            _button("Snooze 1 h", SNOOZE, incident.id),
            _button("Resolve", RESOLVE, incident.id),
            _button("False alarm", FALSE_ALARM, incident.id, "danger"),
        ]
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": fit(
                        f"crisiswatch · incident {untrusted(incident.id, 300)} · "
                        f"last page {_time(page.at)}",
                        SECTION_CHARS,
                    ),
                }
            ],
        }
    )
    return blocks[:MAX_BLOCKS]


def note_blocks(text: str) -> list[Block]:
    """A message that is only a note of ours (trusted text, mrkdwn)."""
    return [section(text)]


def moved_note(severity: Severity, route: Route) -> str:
    """The old thread's last word when an incident moves to a worse rule's route."""
    where = f"<#{route.channel}>" if CHANNEL_ID.fullmatch(route.channel) else route.channel
    return f"⤴️ Now {severity.label}: this incident is followed in {where} from here on"


def thread_reply(page: Page, route: Route | None, acknowledged: Acknowledged | None = None) -> str:
    """The short threaded note of what changed; a page that got worse calls its people, or,
    when someone has acknowledged (given only when the message already showed this severity,
    so its people were called) and only the stage grew, that person alone rather than the
    whole on-call again."""
    incident = page.incident
    changed = changes(page, 1500) or "no change in severity or stage"
    who = ""
    if page.kind is PageKind.ESCALATED:
        severer = any(change.startswith(SEVERITY_ROSE) for change in page.changes)
        if acknowledged is not None and not severer and _USER.fullmatch(acknowledged[0]):
            who = f"cc {ping(acknowledged[0])}"
        else:
            who = pings(people_for(route, incident.severity))
    lines = [f"{_KIND[page.kind]}: {changed}"]
    if page.kind is not PageKind.RESOLVED:
        lines.append(
            f"{incident.severity.label} · {incident.stage.label} — "
            f"{untrusted(incident.summary, 600)}"
        )
    if who:
        lines.append(who)
    return fit("\n".join(lines), SECTION_CHARS)


def escalation_reply(route: Route, waited: timedelta) -> str:
    """The re-page in the thread when nobody acknowledged in time."""
    return fit(
        f"⏰ *Not acknowledged after {elapsed(waited)}* — {pings(route.escalate_to)} please look.",
        SECTION_CHARS,
    )


def ops_notice(text: str) -> str:
    return fit(f"⚠️ crisiswatch: {escape(text)}", SECTION_CHARS)


def brand_name(settings: Settings, brand: str) -> str:
    """The brand's display name from the settings (its id if it is no longer configured)."""
    found = settings.brand(brand)
    return untrusted(found.display_name if found else brand, 80)
