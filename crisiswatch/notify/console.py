"""The console notifier: prints each page as a text block (the demo and dry runs)."""

from __future__ import annotations

import sys
from typing import TextIO

from crisiswatch.domain import Page
from crisiswatch.notify.render import render_text


class ConsoleNotifier:
    name = "console"

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    async def send(self, page: Page) -> None:
        out = self._out or sys.stdout
        out.write(render_text(page) + "\n\n")
        out.flush()
