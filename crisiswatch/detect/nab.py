"""The Numenta Anomaly Benchmark's scoring rules, written from NAB's published description.

A file is rows `0..n-1` with labeled windows `[L, R]` (row indices, inclusive). The first
`min(floor(0.15 n), 750)` rows are probation and not scored. A detected row inside a window earns
a scaled-sigmoid weight (the earlier, the more); each window counts once (its earliest detection)
or costs `fn` when missed; every detected row outside the windows costs `fp`, less so shortly after
a window ends. Normalized scores put the null detector at 0 and the perfect one at 100.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

PROBATION_FRACTION = 0.15
PROBATION_CAP = 750


@dataclass(frozen=True, slots=True)
class Profile:
    """NAB's cost weights: reward of a detected window, cost of a false row, of a missed window."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


@dataclass(frozen=True, slots=True)
class FileScore:
    """The raw score of one file with the row counts NAB reports."""

    raw: float
    tp_rows: int
    fp_rows: int
    detected_windows: int


@dataclass(frozen=True, slots=True)
class Sweep:
    """The best single threshold over a corpus and the raw score it gives each file."""

    threshold: float
    raws: tuple[float, ...]


def probation_rows(n: int) -> int:
    """Rows at the start of a file of `n` rows that are not scored."""
    return min(math.floor(PROBATION_FRACTION * n), PROBATION_CAP)


def scaled_sigmoid(y: float) -> float:
    """NAB's scaled sigmoid: from about 1 (early) through 0 to -1 (far past the window)."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def window_rows(
    stamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[int, int]]:
    """Map windows given as inclusive timestamps onto inclusive row indices of sorted `stamps`."""
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        left = bisect.bisect_left(stamps, start)
        right = bisect.bisect_right(stamps, end) - 1
        if left <= right:
            rows.append((left, right))
    return rows


def row_weights(n: int, windows: Sequence[tuple[int, int]], profile: Profile) -> list[float]:
    """What a detection at each row earns: > 0 in a window, < 0 outside, 0 in probation."""
    weights = [0.0] * n
    probation = probation_rows(n)
    previous: tuple[int, int] | None = None
    ordered = sorted(windows)
    k = 0
    for i in range(probation, n):
        while k < len(ordered) and ordered[k][1] < i:
            previous = ordered[k]
            k += 1
        if k < len(ordered) and ordered[k][0] <= i:
            left, right = ordered[k]
            width = right - left + 1
            weights[i] = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / scaled_sigmoid(-1)
        elif previous is None:
            weights[i] = -profile.fp
        else:
            left, right = previous
            weights[i] = profile.fp * scaled_sigmoid(abs(right - i) / max(right - left, 1))
    return weights


def window_of_rows(n: int, windows: Sequence[tuple[int, int]]) -> list[int]:
    """The index (into `windows`) of the window each row lies in, or -1."""
    owner = [-1] * n
    for k, (left, right) in enumerate(windows):
        for i in range(left, right + 1):
            owner[i] = k
    return owner


def row_scores(
    detected: Sequence[bool], windows: Sequence[tuple[int, int]], profile: Profile
) -> list[float]:
    """Each row's share of the raw score, laid out as NAB's results files do.

    A window's credit (its earliest detection's weight, or `-fn` when missed) sits on the
    window's first row; each detected row outside the windows carries its own cost.
    """
    n = len(detected)
    weights = row_weights(n, windows, profile)
    owner = window_of_rows(n, windows)
    out = [0.0] * n
    for left, _ in windows:
        out[left] = -profile.fn
    credited: set[int] = set()
    for i in range(probation_rows(n), n):
        k = owner[i]
        if not detected[i] or k in credited:
            continue
        if k < 0:
            out[i] = weights[i]
        else:
            out[windows[k][0]] = weights[i]
            credited.add(k)
    return out


def score_file(
    detected: Sequence[bool], windows: Sequence[tuple[int, int]], profile: Profile
) -> FileScore:
    """The raw NAB score of one file given a detection flag per row."""
    n = len(detected)
    owner = window_of_rows(n, windows)
    hits = [i for i in range(probation_rows(n), n) if detected[i]]
    tp_rows = sum(1 for i in hits if owner[i] >= 0)
    raw = sum(row_scores(detected, windows, profile))
    return FileScore(raw, tp_rows, len(hits) - tp_rows, len({owner[i] for i in hits} - {-1}))


def normalized(raw_total: float, n_windows: int, profile: Profile) -> float:
    """NAB's normalized score of a corpus: 0 for the null detector, 100 for the perfect one."""
    perfect = profile.tp * n_windows
    null = -profile.fn * n_windows
    return 100.0 * (raw_total - null) / (perfect - null)


def sweep(
    scores: Sequence[Sequence[float]],
    windows: Sequence[Sequence[tuple[int, int]]],
    profile: Profile,
) -> Sweep:
    """Find the one threshold (over every file) that maximises the summed raw score.

    Rows are visited from the highest score down; lowering the threshold past a score detects
    every row with that score, which adds its cost if outside a window, or may give its window an
    earlier (better) detection.
    """
    events: list[tuple[float, int, float, int]] = []  # (score, file, weight, window key)
    best: list[dict[int, float]] = []
    for f, (file_scores, file_windows) in enumerate(zip(scores, windows, strict=True)):
        n = len(file_scores)
        weights = row_weights(n, file_windows, profile)
        owner = window_of_rows(n, file_windows)
        events.extend(
            (file_scores[i], f, weights[i], owner[i]) for i in range(probation_rows(n), n)
        )
        best.append({})
    events.sort(key=lambda e: -e[0])
    raws = [-profile.fn * len(w) for w in windows]
    top = (math.inf, sum(raws), tuple(raws))
    for j, (score, f, weight, k) in enumerate(events):
        if k < 0:
            raws[f] += weight
        else:
            held = best[f].get(k)
            if held is None:
                raws[f] += weight + profile.fn
                best[f][k] = weight
            elif weight > held:
                raws[f] += weight - held
                best[f][k] = weight
        last_of_tie = j + 1 == len(events) or events[j + 1][0] < score
        if last_of_tie and sum(raws) > top[1]:
            top = (score, sum(raws), tuple(raws))
    return Sweep(top[0], top[2])
