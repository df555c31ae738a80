"""`bench nab`: score the default volume detector on NAB's realTweets files.

Prints NAB's normalized scores for the `alert` column as paged (one fixed default threshold,
one page per surge) and for `anomaly_score` with NAB's oracle threshold sweep, next to the
published detectors' scores on the same files; draws one PNG per series.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from crisiswatch.detect import nab
from crisiswatch.detect.series import score_series

DEFAULT_DATA = Path("../shared/data/nab-realtweets")
DEFAULT_OUT = Path("bench-out/nab")


@dataclass(frozen=True, slots=True)
class Series:
    """One labeled file, run through the detector."""

    name: str
    stamps: list[datetime]
    values: list[float]
    windows: list[tuple[int, int]]
    scores: list[float]
    alerts: list[bool]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load_series(data_dir: Path) -> list[Series]:
    """Read every labeled file and score it with the default detector and paging."""
    labeled: dict[str, list[list[str]]] = json.loads((data_dir / "windows.json").read_text())
    out: list[Series] = []
    for name in sorted(labeled):
        with (data_dir / "data" / name).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        stamps = [_utc(r["timestamp"]) for r in rows]
        values = [float(r["value"]) for r in rows]
        windows = nab.window_rows(stamps, [(_utc(a), _utc(b)) for a, b in labeled[name]])
        results = score_series(stamps, values)
        scores = [s for s, _ in results]
        alerts = [a for _, a in results]
        out.append(Series(name, stamps, values, windows, scores, alerts))
    return out


def published_scores(path: Path, files: set[str], n_windows: int) -> dict[str, dict[str, float]]:
    """Normalized score per published detector and profile over `files` (at NAB's thresholds)."""
    raws: dict[tuple[str, str], float] = defaultdict(float)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["file"] in files:
                raws[(row["detector"], row["profile"])] += float(row["raw_score"])
    return {
        det: {p.name: nab.normalized(raws[(det, p.name)], n_windows, p) for p in nab.PROFILES}
        for det in sorted({d for d, _ in raws})
    }


def _table(series: Sequence[Series], published: dict[str, dict[str, float]]) -> list[str]:
    n_windows = sum(len(s.windows) for s in series)
    rows: list[tuple[str, dict[str, float]]] = []
    paged: dict[str, float] = {}
    swept: dict[str, float] = {}
    thresholds: list[str] = []
    for p in nab.PROFILES:
        raw = sum(nab.score_file(s.alerts, s.windows, p).raw for s in series)
        paged[p.name] = nab.normalized(raw, n_windows, p)
        sweep = nab.sweep([s.scores for s in series], [s.windows for s in series], p)
        swept[p.name] = nab.normalized(sum(sweep.raws), n_windows, p)
        thresholds.append(f"{p.name} {sweep.threshold:.3f}")
    rows.append(("crisiswatch, alert as paged (fixed default)", paged))
    rows.append(("crisiswatch, anomaly_score (oracle sweep)", swept))
    rows.extend((f"{det} (published, oracle)", s) for det, s in published.items())
    rows.sort(key=lambda r: -r[1]["standard"])
    names = [p.name for p in nab.PROFILES]
    lines = [f"{'detector':<46} " + " ".join(f"{n:>18}" for n in names)]
    lines += [f"{label:<46} " + " ".join(f"{s[n]:>18.1f}" for n in names) for label, s in rows]
    lines.append(
        f"({len(series)} files, {n_windows} windows; sweep thresholds: {', '.join(thresholds)})"
    )
    return lines


def write_pngs(series: Sequence[Series], out_dir: Path, out: TextIO) -> None:
    """One PNG per series: counts, labeled windows shaded, pages marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no PNGs written", file=out)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in series:
        x = [t.timestamp() / 86400.0 for t in s.stamps]  # matplotlib's day numbers (1970 epoch)
        fig, ax = plt.subplots(figsize=(16, 4))
        ax.plot(x, s.values, linewidth=0.4, color="tab:blue")
        for left, right in s.windows:
            ax.axvspan(x[left], x[right], color="tab:red", alpha=0.15)
        pages = [t for t, a in zip(x, s.alerts, strict=True) if a]
        for t in pages:
            ax.axvline(t, color="tab:purple", linewidth=0.8)
        ax.xaxis_date()
        ax.set_yscale("symlog")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{s.name}: {len(pages)} pages (purple), labeled windows shaded")
        fig.tight_layout()
        fig.savefig(out_dir / f"{Path(s.name).stem}.png", dpi=80)
        plt.close(fig)
    print(f"wrote {len(series)} PNGs to {out_dir}", file=out)


def bench_nab(data_dir: Path, out_dir: Path, out: TextIO) -> int:
    """Run the benchmark; exit code 0 (also when the data is absent: it skips)."""
    if not (data_dir / "windows.json").is_file():
        print(f"bench nab: skipped, no NAB data at {data_dir}", file=out)
        return 0
    series = load_series(data_dir)
    published = published_scores(
        data_dir / "published" / "per_file_scores.csv",
        {s.name for s in series},
        sum(len(s.windows) for s in series),
    )
    for line in _table(series, published):
        print(line, file=out)
    write_pngs(series, out_dir, out)
    return 0
