"""detect-series: score a `timestamp,value` CSV of bucket counts with the default detector."""

from __future__ import annotations

import csv
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from crisiswatch.detect.signals import SignalDetector
from crisiswatch.detect.volume import DEFAULT_QUIET
from crisiswatch.domain import Bucket, PageKind, SeriesKey
from crisiswatch.incidents import IncidentManager
from crisiswatch.mentions import EARLIEST, LATEST
from crisiswatch.rules.engine import RuleEngine
from crisiswatch.rules.schema import Rule

DEFAULT_BUCKET_SECONDS = 300
MAX_VALUE = 1e12  # no bucket of mentions holds more; far larger overflows the detector's sums


class SeriesError(ValueError):
    """The input cannot be scored; the message says why and where."""


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed input row, with its text kept for the output."""

    line: int
    stamp_text: str
    value_text: str
    at: datetime
    value: float


def _parse_time(text: str, line: int) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SeriesError(f"line {line}: timestamp {text!r} is not an ISO 8601 time") from None
    if not EARLIEST <= at.year <= LATEST:  # as for a mention: beyond, time arithmetic breaks
        raise SeriesError(
            f"line {line}: timestamp {text!r} is outside the years {EARLIEST}–{LATEST}"
        )
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _parse_value(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= MAX_VALUE else None  # NaN compares false


def read_rows(inp: TextIO) -> tuple[list[Row], list[int]]:
    """Parse the CSV; return its rows and the line numbers skipped for a missing or bad value."""
    reader = csv.reader(inp)
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:2] != ["timestamp", "value"]:
        raise SeriesError("expected a header line 'timestamp,value'")
    rows: list[Row] = []
    skipped: list[int] = []
    for fields in reader:
        line = reader.line_num
        if not fields or not any(f.strip() for f in fields):
            continue
        at = _parse_time(fields[0], line)
        value = _parse_value(fields[1]) if len(fields) > 1 else None
        if value is None:
            skipped.append(line)
            continue
        if rows and at <= rows[-1].at:
            raise SeriesError(f"line {line}: timestamp {fields[0]!r} is not after the row before")
        rows.append(Row(line, fields[0], fields[1], at, value))
    if not rows:
        raise SeriesError("no rows with a value to score")
    return rows, skipped


def bucket_seconds(stamps: Sequence[datetime]) -> int:
    """The bucket size: the median step between consecutive timestamps."""
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    return max(1, round(statistics.median(steps))) if steps else DEFAULT_BUCKET_SECONDS


def score_series(
    stamps: Sequence[datetime], values: Sequence[float], quiet: timedelta = DEFAULT_QUIET
) -> list[tuple[float, bool]]:
    """Score every bucket as the daemon would, and flag the buckets that open a page.

    The path is the daemon's own: the series' detectors make a signal, a rule
    `volume_spike: balanced` with `keep_firing_for: quiet` makes alerts, and the incident
    manager opens a page only when no incident of that surge is open.
    """
    width = timedelta(seconds=bucket_seconds(stamps))
    detector = SignalDetector(int(width.total_seconds()))
    rule = Rule.model_validate(
        {"id": "volume", "when": {"volume_spike": "balanced"}, "keep_firing_for": quiet}
    )
    engine, incidents = RuleEngine([rule]), IncidentManager({rule.id: quiet})
    series = SeriesKey("series")
    out: list[tuple[float, bool]] = []
    for at, value in zip(stamps, values, strict=True):
        count = round(value)
        bucket = Bucket(series, at, at + width, count, count, 0, 0, 0, (), (), ())
        signal = detector.signal(bucket)
        pages = incidents.update(engine.evaluate(signal), bucket.end)
        opened = any(page.kind is PageKind.OPENED for page in pages)
        out.append((signal.volume_score, opened))
    return out


def detect_series(inp: TextIO, out: TextIO, err: TextIO) -> int:
    """Read `timestamp,value` rows, write `timestamp,value,anomaly_score,alert`; exit code."""
    try:
        rows, skipped = read_rows(inp)
    except SeriesError as exc:
        print(f"detect-series: {exc}", file=err)
        return 2
    except csv.Error as exc:
        print(f"detect-series: malformed CSV: {exc}", file=err)
        return 2
    if skipped:
        print(
            f"detect-series: skipped {len(skipped)} row(s) with a missing, non-numeric, "
            f"negative or absurd (over {MAX_VALUE:.0e}) value (first at line {skipped[0]})",
            file=err,
        )
    results = score_series([r.at for r in rows], [r.value for r in rows])
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["timestamp", "value", "anomaly_score", "alert"])
    for row, (score, alert) in zip(rows, results, strict=True):
        writer.writerow([row.stamp_text, row.value_text, f"{score:.4f}", int(alert)])
    return 0
