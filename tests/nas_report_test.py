"""nas.report and nas.pareto: tables, plots, fronts, rank correlation."""

import csv
import json

import numpy as np
import pytest

from nas import pareto, report


def test_tables_plot_and_fronts_are_written(searched):
    _, outputs = searched
    rows, paths = outputs["rows"], outputs["paths"]
    table = list(csv.DictReader(open(paths["trials.csv"])))
    assert [t["trial_id"] for t in table] == [r["trial_id"] for r in rows]
    assert [t["feasible"] for t in table] == [str(r["feasible"]) for r in rows]
    assert all(t["hp.stages"] for t in table)
    assert len(json.load(open(paths["trials.json"]))["trials"]) == 3
    assert open(paths["accuracy_vs_latency.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved_fronts = json.load(open(paths["pareto.json"]))
    for name, (acc, cost) in pareto.FRONTS.items():
        front = outputs["fronts"][name]
        assert saved_fronts[name] == [r["trial_id"] for r in front]
        points = {r["trial_id"]: (r[acc], r[cost]) for r in rows}
        for r in rows:
            dominated = any(
                pareto.dominates(p, points[r["trial_id"]], (True, False)) for p in points.values()
            )
            assert (r in front) == (not dominated), (name, r["trial_id"])


def test_non_dominated_keeps_exactly_the_front():
    points = [(0.9, 100), (0.8, 50), (0.85, 120), (0.9, 100), (0.7, 50)]
    assert pareto.non_dominated(points, (True, False)) == [0, 1, 3]
    rows = [
        {"trial_id": str(i), "val_accuracy": a, "latency_us": c} for i, (a, c) in enumerate(points)
    ] + [{"trial_id": "x", "val_accuracy": None}]
    assert [r["trial_id"] for r in pareto.front(rows)] == ["1", "0", "3"]
    with pytest.raises(ValueError, match="coordinates"):
        pareto.non_dominated([(1, 2, 3)], (True, False))


def test_spearman_with_ties_matches_a_hand_computation():
    # ranks x = [1, 2.5, 2.5, 4], ranks y = [1, 3, 2, 4]; deviations from 2.5:
    # sxy = 2.25 + 0 + 0 + 2.25 = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5).
    assert report.average_ranks([1, 2, 2, 3]) == [1.0, 2.5, 2.5, 4.0]
    assert report.spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(4.5 / 22.5**0.5)
    assert report.spearman([1, 2, 3], [5, 9, 100]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(report.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal length"):
        report.spearman([1, 2], [1])
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 12).tolist(), rng.integers(0, 5, 12).tolist()
    assert report.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


def test_search_summary_shows_the_figures_the_budget_was_checked_on():
    row = dict(
        trial_id="03",
        status="COMPLETED",
        feasible=True,
        val_accuracy=0.883,
        latency_us=42.2,
        file_bytes=99120,
        int8_latency_us=24.2,
        int8_file_bytes=31360,
        arena_bytes=19072,
        params=24282,
        score=0.883,
        violations="",
    )
    fronts = {name: [row] for name in list(pareto.FRONTS) + list(pareto.FEASIBLE_FRONTS)}
    outputs = dict(rows=[row], fronts=fronts, best=row, paths={report.BEST_HPS_FILE: "b.json"})
    int8 = report.summary_text(dict(outputs, int8=True))
    assert "int8 24.2 us, 31360 bytes" in int8 and "99120" not in int8 and "42.2" not in int8
    assert "accuracy vs int8 latency" in int8 and "accuracy vs latency:" not in int8
    float32 = report.summary_text(dict(outputs, int8=False))
    assert "42.2 us, 99120 bytes" in float32 and "31360" not in float32
    assert "accuracy vs latency:" in float32 and "int8" not in float32
