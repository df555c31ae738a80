"""A page's chart: the series' last 24 h against the same hours a week earlier, as a PNG.

Volume with what stays below its alert level shaded, negative share below, the alert marked.
Drawn with matplotlib's object API (no pyplot, no global state), so it may run in a worker
thread; without matplotlib there is no chart.
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timedelta

from crisiswatch.detect.history import SeriesHistory, Window
from crisiswatch.domain import SeriesKey

SPAN = timedelta(hours=24)
WEEK = timedelta(days=7)


def windows(
    history: SeriesHistory, series: SeriesKey, end: datetime
) -> tuple[Window, Window] | None:
    """The last 24 h before `end` and the same hours a week earlier; None if too little known."""
    current = history.window(series, end, SPAN)
    if current.known < 6:
        return None
    return current, history.window(series, end - WEEK, SPAN)


def render_png(current: Window, week_ago: Window, alert_at: datetime, title: str) -> bytes | None:
    """The chart as PNG bytes, or None when matplotlib is not installed."""
    try:
        from matplotlib.dates import DateFormatter
        from matplotlib.figure import Figure
    except ImportError:
        return None
    times = [current.start + current.bucket * i for i in range(len(current.count))]
    share = [_share(n, c) for n, c in zip(current.negative, current.count, strict=True)]
    figure = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    volume, negative = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    upper = [0.0 if math.isnan(u) else u for u in current.upper]
    volume.fill_between(times, 0, upper, color="#9ecae1", alpha=0.5, step="post",
                        label="below the alert level")  # fmt: skip
    volume.plot(times, current.expected, color="#3182bd", linewidth=1, label="expected")
    if week_ago.known:
        volume.plot(times, week_ago.count, color="grey", linestyle="--", linewidth=1,
                    label="a week earlier")  # fmt: skip
        negative.plot(
            times,
            [_share(n, c) for n, c in zip(week_ago.negative, week_ago.count, strict=True)],
            color="grey",
            linestyle="--",
            linewidth=1,
        )
    volume.plot(times, current.count, color="black", linewidth=1.5, label="mentions")
    negative.plot(times, share, color="#de2d26", linewidth=1.5)
    for axes in (volume, negative):
        axes.axvline(alert_at, color="#de2d26", linewidth=1)
        axes.grid(alpha=0.3)
    volume.set_title(title.replace("$", r"\$"), fontsize=11)
    volume.set_ylabel("mentions per bucket")
    volume.legend(loc="upper left", fontsize=8)
    negative.set_ylabel("negative %")
    negative.set_ylim(0, 100)
    hours = DateFormatter("%H:%M")  # type: ignore[no-untyped-call]
    negative.xaxis.set_major_formatter(hours)
    negative.set_xlabel("UTC")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _share(negative: float, count: float) -> float:
    return 100 * negative / count if count and not math.isnan(count) else math.nan
