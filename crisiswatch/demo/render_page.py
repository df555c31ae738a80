"""Draw a real page of the demo the way Slack shows it on a phone, for the README.

    python -m crisiswatch.demo.render_page --out crisiswatch/demo/slack-page.png

replays the demo through the pipeline until its first critical page, builds that page's Block
Kit blocks with `slack_blocks.page_blocks` and draws them with Pillow in matplotlib's DejaVu
fonts (header, sections, fields, posts with their buttons, the action buttons, context); it also
writes the chart attached to that page (`--chart`). Deterministic: the same bytes every run.
Needs matplotlib (the `charts` extra), which brings Pillow.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from crisiswatch.config import load_settings
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Mention, Page, Severity
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, read_mentions
from crisiswatch.notify import chart as charts
from crisiswatch.notify import slack_blocks
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules

CONFIG = Path(__file__).parent / "config.yaml"
WIDTH, MARGIN, GAP = 780, 28, 14  # a phone's 390 points, drawn at 2x
TEXT, GREY, LINK, LINE = "#1d1c1d", "#616061", "#1264a3", "#dddddd"
_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
_REGULAR = ImageFont.truetype(str(_FONTS / "DejaVuSans.ttf"), 25)
_BOLD = ImageFont.truetype(str(_FONTS / "DejaVuSans-Bold.ttf"), 25)
_HEADER = ImageFont.truetype(str(_FONTS / "DejaVuSans-Bold.ttf"), 31)
_SMALL = ImageFont.truetype(str(_FONTS / "DejaVuSans.ttf"), 21)
_MARKUP = re.compile(r"<([^>|]+)\|([^>]+)>|<[@!](?:subteam\^)?([^>]+)>|\*([^*\n]+)\*")
_PICTOGRAPHS = re.compile("[\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff]\ufe0f? ?|\u200b")
Run = tuple[str, ImageFont.FreeTypeFont, str]  # text, font, colour


def first_critical_page() -> tuple[Page, Pipeline]:
    """The demo's first critical page, and the pipeline as it stood then (for its chart)."""
    settings = load_settings(CONFIG)
    pipeline = Pipeline(
        settings, load_rules(settings.rules, settings), SentimentModel.load_default()
    )
    assert settings.sources.replay is not None, "the demo config has a replay source"
    with open_lines(settings.sources.replay.path) as handle:
        for item in read_mentions(handle, default_source="replay"):
            if isinstance(item, Mention):
                for page in pipeline.feed(item):
                    if page.incident.severity is Severity.CRITICAL:
                        return page, pipeline
    raise SystemExit("the demo raised no critical page")


def runs(mrkdwn: str, font: ImageFont.FreeTypeFont = _REGULAR, colour: str = TEXT) -> list[Run]:
    """Slack mrkdwn as styled runs: *bold*, <url|links> and <@pings>; entities unescaped."""
    found: list[Run] = []
    at = 0
    for match in _MARKUP.finditer(mrkdwn):
        found.append((mrkdwn[at : match.start()], font, colour))
        link, label, ping, bold = match.groups()
        if link:
            found.append((label, font, LINK))
        elif ping:
            found.append(("@" + ping, _BOLD, LINK))
        else:
            found.append((bold, _BOLD, colour))
        at = match.end()
    found.append((mrkdwn[at:], font, colour))
    return [(_plain(text), f, c) for text, f, c in found if text]


def _plain(text: str) -> str:
    text = _PICTOGRAPHS.sub("", text).replace("&lt;", "<").replace("&gt;", ">")
    return text.replace("&amp;", "&")


def wrap(pieces: Sequence[Run], width: int) -> Iterator[list[tuple[int, Run]]]:
    """Lines of (x, run) no wider than `width`, breaking at spaces and newlines."""
    line: list[tuple[int, Run]] = []
    x = 0
    for text, font, colour in pieces:
        for n, part in enumerate(text.split("\n")):
            if n:
                yield line
                line, x = [], 0
            for word in re.findall(r"\s+|\S+", part):
                size = int(font.getlength(word))
                if word.isspace():
                    x += size * bool(x)
                    continue
                if x and x + size > width:
                    yield line
                    line, x = [], 0
                while size > width:  # a word longer than a line: cut it
                    cut = max(1, len(word) * width // size)
                    yield [(0, (word[:cut], font, colour))]
                    word = word[cut:]
                    size = int(font.getlength(word))
                line.append((x, (word, font, colour)))
                x += size
    yield line


class Canvas:
    """A tall white page that text and buttons are drawn down; cropped when done."""

    def __init__(self) -> None:
        self.image = Image.new("RGB", (WIDTH, 6000), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.y = MARGIN

    def text(self, pieces: Sequence[Run], x: int, width: int, y: int | None = None) -> int:
        """Draw wrapped runs from (x, y or the cursor); the y below them."""
        top = self.y if y is None else y
        for line in wrap(pieces, width):
            height = max((int(run[1].size * 1.4) for _, run in line), default=int(_REGULAR.size))
            for dx, (word, font, colour) in line:
                self.draw.text((x + dx, top), word, font=font, fill=colour)
            top += height
        return top

    def mrkdwn(self, text: str, x: int, width: int, y: int | None = None) -> int:
        """Draw mrkdwn, its `> ` lines as quotes (indented, with a bar); the y below it."""
        top = self.y if y is None else y
        for line in text.split("\n"):
            if line.startswith("> "):
                bottom = self.text(runs(line[2:]), x + 22, width - 22, top)
                self.draw.rectangle((x, top + 2, x + 5, bottom - 2), fill=LINE)
                top = bottom
            else:
                top = self.text(runs(line), x, width, top)
        return top

    def button(self, label: str, x: int, y: int, style: str | None) -> int:
        """A Block Kit button at (x, y); its right edge."""
        width = int(_BOLD.getlength(label)) + 36
        fill, ink, border = {
            "primary": ("#007a5a", "white", "#007a5a"),
            "danger": ("white", "#e01e5a", "#e01e5a"),
        }.get(style or "", ("white", TEXT, "#bbbbbb"))
        self.draw.rounded_rectangle(
            (x, y, x + width, y + 52), 8, fill=fill, outline=border, width=2
        )
        self.draw.text((x + 18, y + 12), label, font=_BOLD, fill=ink)
        return x + width

    def png(self) -> Image.Image:
        return self.image.crop((0, 0, WIDTH, self.y + MARGIN))


def draw(blocks: Sequence[dict[str, Any]], posted: str) -> Image.Image:
    """Block Kit blocks as a Slack message on a phone: the app's name, then each block."""
    canvas = Canvas()
    draw = canvas.draw
    draw.rounded_rectangle((MARGIN, MARGIN, MARGIN + 64, MARGIN + 64), 12, fill="#4a154b")
    draw.text((MARGIN + 11, MARGIN + 17), "CW", font=_BOLD, fill="white")
    name = [("crisiswatch", _BOLD, TEXT), ("  APP  " + posted, _SMALL, GREY)]
    canvas.y = canvas.text(name, MARGIN + 80, WIDTH, MARGIN + 16) + 30
    inner = WIDTH - 2 * MARGIN
    for block in blocks:
        kind = block["type"]
        if kind == "header":
            canvas.y = canvas.text(runs(block["text"]["text"], _HEADER), MARGIN, inner)
        elif kind == "section" and "fields" in block:
            half = (inner - GAP) // 2
            fields = [f["text"] for f in block["fields"]]
            for row in range(0, len(fields), 2):
                bottoms = [
                    canvas.mrkdwn(text, MARGIN + col * (half + GAP), half, canvas.y)
                    for col, text in enumerate(fields[row : row + 2])
                ]
                canvas.y = max(bottoms) + GAP
        elif kind == "section":
            accessory = block.get("accessory")
            width = inner
            if accessory:
                width -= int(_BOLD.getlength(accessory["text"]["text"])) + 52
            top = canvas.y
            canvas.y = canvas.mrkdwn(block["text"]["text"], MARGIN, width)
            if accessory:
                canvas.button(accessory["text"]["text"], MARGIN + width + 16, top, None)
                canvas.y = max(canvas.y, top + 52)
        elif kind == "divider":
            draw.line((MARGIN, canvas.y + 6, WIDTH - MARGIN, canvas.y + 6), fill=LINE, width=2)
        elif kind == "actions":
            x = MARGIN
            for button in block["elements"]:
                label = button["text"]["text"]
                if x > MARGIN and x + _BOLD.getlength(label) + 36 > WIDTH - MARGIN:
                    x, canvas.y = MARGIN, canvas.y + 64
                x = canvas.button(label, x, canvas.y, button.get("style")) + 12
            canvas.y += 52
        elif kind == "context":
            text = " ".join(e["text"] for e in block["elements"])
            canvas.y = canvas.text(runs(text, _SMALL, GREY), MARGIN, inner)
        canvas.y += GAP + 4
    return canvas.png()


def chart_png(page: Page, history: SeriesHistory) -> bytes | None:
    """The chart the Slack notifier attaches to this page."""
    signal = page.incident.latest
    found = charts.windows(history, signal.series, signal.bucket.end)
    if found is None:
        return None
    title = f"{signal.series}: last 24 h and a week earlier"
    return charts.render_png(*found, signal.bucket.start, title)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "slack-page.png")
    parser.add_argument("--chart", type=Path, help="also write the page's chart here")
    args = parser.parse_args(argv)
    page, pipeline = first_critical_page()
    settings = pipeline.settings
    brand = slack_blocks.brand_name(settings, page.incident.brand)
    blocks = slack_blocks.page_blocks(page, brand, settings.routes.get(page.incident.route))
    image = draw(blocks, f"{page.at:%H:%M}")
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(args.out, optimize=True)
    print(f"wrote {args.out}: {page.kind.value} page of {page.incident.id}")
    if args.chart is not None:
        png = chart_png(page, pipeline.history)
        if png is not None:
            args.chart.write_bytes(png)
            print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
