"""The NAB scorer against NAB's published per-row fixture and per-file scores."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from crisiswatch.detect import nab

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab-realtweets"
AAPL = "Twitter_volume_AAPL.csv"
PROFILES = {p.name: p for p in nab.PROFILES}

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="NAB data not present")


def published() -> list[dict[str, str]]:
    with (DATA / "published" / "per_file_scores.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def aapl_fixture() -> tuple[list[dict[str, str]], list[tuple[int, int]]]:
    with (DATA / "published" / "numenta_rows_AAPL.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    spans = json.loads((DATA / "windows.json").read_text())[AAPL]
    windows = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in spans]
    return rows, nab.window_rows(stamps, windows)


class TestRules:
    def test_scaled_sigmoid(self) -> None:
        """S is 0 at the window end, about 0.987 a window-width before, -1 past 3 widths."""
        assert nab.scaled_sigmoid(0.0) == 0.0
        assert nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
        assert nab.scaled_sigmoid(3.5) == -1.0

    def test_probation(self) -> None:
        """15 % of the rows, at most 750."""
        assert nab.probation_rows(1000) == 150
        assert nab.probation_rows(15902) == 750

    def test_left_edge_earns_tp_and_refiring_is_punished(self) -> None:
        """A hit at a window's left edge earns tp; each later false row costs separately."""
        windows = [(200, 209)]
        p = PROFILES["standard"]
        hit = [i == 200 for i in range(400)]
        assert nab.score_file(hit, windows, p).raw == pytest.approx(1.0)
        noisy = [i == 200 or i >= 390 for i in range(400)]
        assert nab.score_file(noisy, windows, p).raw < nab.score_file(hit, windows, p).raw - 0.9


@needs_data
class TestPublished:
    @pytest.mark.parametrize("profile", list(PROFILES))
    def test_aapl_rows_match_fixture(self, profile: str) -> None:
        """Per-row scores and the raw score of Numenta HTM on AAPL match NAB's own."""
        rows, windows = aapl_fixture()
        ref = next(
            r
            for r in published()
            if r["detector"] == "numenta" and r["file"] == AAPL and r["profile"] == profile
        )
        detected = [float(r["anomaly_score"]) >= float(ref["threshold"]) for r in rows]
        mine = nab.row_scores(detected, windows, PROFILES[profile])
        theirs = [float(r[f"S(t)_{profile}"]) for r in rows]
        assert mine == pytest.approx(theirs, abs=1e-9)
        score = nab.score_file(detected, windows, PROFILES[profile])
        assert score.raw == pytest.approx(float(ref["raw_score"]), abs=1e-9)
        assert (score.tp_rows, score.fp_rows) == (int(ref["tp_rows"]), int(ref["fp_rows"]))

    def test_sweep_agrees_with_scoring_at_its_threshold(self) -> None:
        """The sweep's best raw score is what score_file gives at the chosen threshold."""
        rows, windows = aapl_fixture()
        scores = [float(r["anomaly_score"]) for r in rows]
        for p in nab.PROFILES:
            sweep = nab.sweep([scores], [windows], p)
            detected = [s >= sweep.threshold for s in scores]
            assert sweep.raws[0] == pytest.approx(nab.score_file(detected, windows, p).raw)

    def test_normalized_per_file_scores(self) -> None:
        """Normalizing the published per-file raw scores gives the published table."""
        raws: dict[tuple[str, str], float] = defaultdict(float)
        for r in published():
            raws[(r["detector"], r["profile"])] += float(r["raw_score"])
        expect = {"ARTime": (81.0, 68.6, 87.3), "numenta": (69.9, 60.1, 75.8)}
        for det, scores in expect.items():
            got = tuple(round(nab.normalized(raws[(det, p.name)], 16, p), 1) for p in nab.PROFILES)
            assert got == scores
        assert nab.normalized(raws[("null", "standard")], 16, PROFILES["standard"]) == 0.0
