"""The console notifier: prints each page as a text block (the demo and dry runs)."""

from __future__ import annotations

import sys
from typing import TextIO

from crisiswatch.config import LiveSettings
from crisiswatch.domain import Page
from crisiswatch.notify.render import render_text
from crisiswatch.notify.slack_blocks import people_for


class ConsoleNotifier:
    name = "console"

    def __init__(self, live: LiveSettings, out: TextIO | None = None) -> None:
        self._live = live
        self._out = out

    async def send(self, page: Page) -> None:
        out = self._out or sys.stdout
        route = self._live.current.routes.get(page.incident.route)
        if route is None:
            to = f"route {page.incident.route!r} (not configured)"
        else:
            to = " ".join([route.channel, *people_for(route, page.incident.severity)])
        out.write(render_text(page, to) + "\n\n")
        out.flush()

    async def notice(self, text: str) -> None:
        out = self._out or sys.stdout
        out.write(f"── OPS NOTICE ──\n{text}\n\n")
        out.flush()
