"""nas.final: the final step (selection, retraining, joint timing, summary)."""

import json
import os

import numpy as np
import pytest
from nas_helpers import (
    CLASSES,
    MAX_PARAMS,
    SHAPE,
    StubSearch,
    final_row,
    make_tuner,
    retime_inputs,
    tiny_space,
    trial_row,
)

from kd_keras import models
from nas import objective as objective_lib
from nas import oracles, pareto, report
from nas import space as search_space


@pytest.mark.parametrize(
    "limits, labelled",
    [
        # Within a decade (latencies of 11-19 us): every tick plainly labelled.
        ((10.7, 18.9), {"11", "12", "15", "18"}),
        # Within a decade but wider (bytes of 6-31 KB): not 7000 8000 9000.
        ((6_000, 31_000), {"10000", "20000", "30000"}),
        # Across decades (bytes of 6 KB to 300 KB): the majors only.
        ((6_000, 300_000), {"10000", "100000"}),
    ],
)
def test_final_plot_labels_log_axes_with_plain_numbers(limits, labelled):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(limits, [0, 1])
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    report.plain_log_ticks(ax.xaxis)
    fig.canvas.draw()
    ticks = ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
    texts = {t.get_text() for t in ticks if limits[0] <= t.get_position()[0] <= limits[1]}
    plt.close(fig)
    texts.discard("")
    assert labelled <= texts
    assert not any("times" in t or "^" in t for t in texts), texts
    if limits[1] > 10 * limits[0]:
        assert all(t.rstrip("0") == "1" for t in texts), texts
    if limits[1] > 2.5 * limits[0]:
        assert not texts & {"7000", "8000", "9000"}, texts


@pytest.mark.slow(20)
def test_final_step_retrains_the_pareto_set_and_hand_points(tmp_path):
    from nas import final

    space = tiny_space(filters=(4, 8, 16, 32, 48), expansions=(1, 2))
    search = make_tuner(
        tmp_path,
        oracles.make_oracle("random", max_trials=3, seed=3),
        StubSearch,
        space=space,
        budget=objective_lib.Budget(max_params=MAX_PARAMS),
    )
    search.search(verbose=0)
    rows = report.write_outputs(search)["rows"]
    chosen = final.select(rows, top=2)
    archs = report.architectures(rows)
    assert chosen and all(r["feasible"] for r in chosen) and len(chosen) <= 2
    assert all(r in archs for r in chosen)
    calls = len(search.fits)
    hand = ["cnn:0.25", "cnn_dws:0.5"]
    result = final.run_final(search, rows, final_epochs=2, top=2, hand=hand, latency_runs=20)
    got = result["rows"]
    assert [r["source"] for r in got] == ["search"] * len(chosen) + ["hand", "hand"]
    assert [r["name"] for r in got[-2:]] == ["cnn_0.25", "cnn_dws_0.5"]
    # Found: proxy read from its trial; hand: trained with the trial protocol. Then
    # every one retrained at full budget (2 epochs).
    assert search.fits[calls:][-1][1] == 2
    assert len(search.fits) - calls == 2 + len(got)
    for r in got:
        assert r["proxy_source"].startswith("trial" if r["source"] == "search" else "trained")
        assert os.path.getsize(r["tflite"]) == r["int8_file_bytes"]
        assert r["arena_bytes"] > 0 and r["int8_latency_us"] > 0 and r["tflm_runs"]
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["int8_test_accuracy"] <= 1.0
        assert r["feasible"] == (r["params"] <= MAX_PARAMS)
    cnn = models.build("cnn", SHAPE, CLASSES, width=0.25).count_params()
    assert got[-2]["params"] == cnn
    assert result["spearman_all"] == pytest.approx(
        report.spearman([r["proxy_val_accuracy"] for r in got], [r["test_accuracy"] for r in got])
    ) or np.isnan(result["spearman_all"])
    for name, (acc, cost) in final.FINAL_FRONTS.items():
        expected = [
            h["name"]
            for h in got[-2:]
            if any(
                pareto.dominates((f[acc], f[cost]), (h[acc], h[cost]), (True, False))
                for f in got[:-2]
            )
        ]
        assert result["dominated"][name] == expected
    paths = result["paths"]
    assert open(paths["final_fronts.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(paths["final.md"]).read()
    assert "cnn_dws_0.5" in text and "Spearman(proxy, test accuracy), all retrained" in text
    # Resumed: nothing is trained or measured twice. The stored file paths are
    # as the first process named them (here: from another working directory);
    # the resumed step finds each file in its own run directory.
    for r in got:
        row_file = os.path.join(os.path.dirname(os.path.dirname(r["tflite"])), final.ROW_FILE)
        saved = json.load(open(row_file))
        stored = os.path.join("elsewhere", r["name"], "export", os.path.basename(r["tflite"]))
        saved["tflite"] = stored
        json.dump(saved, open(row_file, "w"))
    again = final.run_final(search, rows, final_epochs=2, top=2, hand=hand, latency_runs=20)
    assert len(search.fits) - calls == 2 + len(got)
    assert [r["test_accuracy"] for r in again["rows"]] == [r["test_accuracy"] for r in got]
    assert [r["tflite"] for r in again["rows"]] == [r["tflite"] for r in got]


def test_final_summary_needs_one_found_student_cheaper_and_as_accurate_on_both_costs():
    from nas import final

    hand = [
        final_row("cnn_0.25", "hand", 0.85, 8000, 6.0),
        final_row("cnn_1", "hand", 0.91, 30000, 17.0),
    ]
    # a beats cnn_0.25 on latency only, b on bytes only: together they dominate
    # it on each plane, but no single one covers it on both costs.
    a = final_row("a", "search", 0.86, 9000, 5.0)
    b = final_row("b", "search", 0.86, 7000, 7.0)
    big = final_row("big", "search", 0.918, 29000, 16.0)
    s = final.summarize(hand + [a, b, big])
    assert s["dominated"]["accuracy_vs_int8_latency"] == ["cnn_0.25", "cnn_1"]
    assert s["dominated"]["accuracy_vs_int8_bytes"] == ["cnn_0.25", "cnn_1"]
    assert s["covered"] == {"cnn_0.25": None, "cnn_1": "big"}
    assert not s["beats_hand"]
    lead, over = s["margins"]["big"]
    assert over == "cnn_0.25" and lead == pytest.approx(0.068)
    assert s["margins"]["a"] == (None, None)
    # A found student covering cnn_0.25 on both costs: every hand point is covered
    # and big leads the hand points it costs no less than by >= 0.5 pt.
    c = final_row("c", "search", 0.85, 8000, 6.0)
    s = final.summarize(hand + [a, b, big, c])
    assert s["covered"] == {"cnn_0.25": "c", "cnn_1": "big"} and s["beats_hand"]
    # ... but not when the lead over the hand point it costs as much as is 0.4 pt.
    big2 = final_row("big", "search", 0.914, 30000, 17.0)
    s = final.summarize(hand + [c, big2])
    assert s["margins"]["big"][1] == "cnn_1" and not s["beats_hand"]
    text = report.final_markdown(
        dict(s, rows=[dict(r, final_epochs=2, proxy_epochs=1) for r in hand + [c, big2]])
    )
    assert "- cnn_0.25: c" in text and ": not met." in text
    # A same-cost copy of a hand point (e.g. it with relu6) covers and is
    # counted by the rule, but named, and the covers without copies beside it.
    copy = dict(c, copy_of="trial_08")
    sc = final.summarize(hand + [a, b, big, copy])
    assert sc["covered"] == {"cnn_0.25": "c", "cnn_1": "big"} and sc["beats_hand"]
    assert sc["covered_without_copies"] == {"cnn_0.25": None, "cnn_1": "big"}
    assert sc["n_copies"] == 1
    copied = report.final_markdown(
        dict(sc, rows=[dict(r, final_epochs=2, proxy_epochs=1) for r in hand + [a, b, big, copy]])
    )
    assert "- cnn_0.25: c (a same-cost copy of trial_08; without copies: none)" in copied
    assert "| c | search (copy of trial_08) |" in copied
    assert "hand point (c of trial_08): 1 of 2." in copied
    assert "| big | search |" in copied


def test_final_select_spreads_along_the_front_from_most_accurate_to_cheapest(monkeypatch):
    from nas import final

    # Ten architectures on the front: accuracy rises with cost.
    archs = [
        dict(trial_id=f"{i:02d}", val_accuracy=0.5 + i / 100, feasible=True) for i in range(10)
    ]
    monkeypatch.setattr(report, "architectures", lambda rows: archs)
    monkeypatch.setattr(pareto, "fronts", lambda rows, fronts: {"f": archs})
    ids = [r["trial_id"] for r in final.select([], top=4)]
    assert ids == ["09", "06", "03", "00"]  # most accurate ... cheapest
    assert [r["trial_id"] for r in final.select([], top=1)] == ["09"]
    assert len(final.select([], top=20)) == 10


def test_final_select_takes_a_challenger_for_every_tried_hand_point_first(monkeypatch):
    from nas import final

    def row(tid, acc, nbytes, us, feasible=True):
        return dict(
            trial_id=tid,
            val_accuracy=acc,
            int8_file_bytes=nbytes,
            int8_latency_us=us,
            feasible=feasible,
            status="COMPLETED",
        )

    # A front of six (accuracy rises with both costs) and two dominated rows.
    front = [row(f"0{i}", 0.80 + i / 100, 1000 * (i + 1), 10.0 + i) for i in range(6)]
    cheap_better = row("10", 0.815, 1500, 10.5)  # off the byte front (01 is cheaper)
    archs = front + [cheap_better]
    monkeypatch.setattr(report, "architectures", lambda rows: archs)
    monkeypatch.setattr(pareto, "fronts", lambda rows, fronts: {"f": front})
    hand = [
        row("h0", 0.83, 1600, 10.6),  # costs no less than 00 and 10: 10 is more accurate
        row("h1", 0.90, 4000, 13.0),  # 00 .. 03 cost no more: 03 is the most accurate
        row("h2", 0.50, 500, 9.0),  # cheaper than every found row: no challenger
        row("h3", 0.99, 9000, 99.0, feasible=False),  # over budget: no target
    ]
    ids = [r["trial_id"] for r in final.select([], top=4, hand_rows=hand)]
    # Challengers 10 and 03, then a spread of two over the rest of the front.
    assert sorted(ids) == ["00", "03", "05", "10"]
    assert ids == ["05", "03", "10", "00"]  # most accurate proxy first
    # Challengers come first when `top` is small; none is taken twice.
    assert sorted(r["trial_id"] for r in final.select([], top=2, hand_rows=hand)) == ["03", "10"]
    assert [r["trial_id"] for r in final.select([], top=1, hand_rows=hand + hand)] == ["10"]
    # Without hand rows, the spread alone (the old behaviour).
    assert [r["trial_id"] for r in final.select([], top=3)] == ["05", "03", "00"]


def test_final_entries_mark_same_cost_copies_of_hand_points():
    from nas import final

    space = search_space.StudentSpace((28, 28, 1), 10, filters=(4, 8, 16))
    hand = search_space.hand_point("cnn", 0.25)
    deeper = search_space.hand_point("cnn", 0.25, stages=4)
    rows = [
        trial_row("00", hand, 0.81, 6816, 10.0),
        trial_row("08", deeper, 0.86, 10360, 10.4),
        trial_row("13", dict(hand, activation="relu6"), 0.82, 6816, 10.3),
        trial_row("14", dict(hand, dropout=0.1), 0.82, 6816, 9.9),
        trial_row("18", dict(deeper, stage2_blocks=2), 0.87, 11752, 11.7),
    ]
    got = final.entries(rows, top=10, hand=["cnn:0.25"], hypermodel=space)
    marks = {e["name"]: e["copy_of"] for e in got if e["source"] == "search"}
    assert marks == {
        "trial_08": None,
        "trial_13": "cnn_0.25",
        "trial_14": "cnn_0.25",
        "trial_18": None,
    }


def _trials_around_cnn_half():
    """(space, trials, the deeper hand point): hand point cnn:0.5, a same-cost
    copy of it scoring higher, and two deeper, cheaper students."""
    space = search_space.StudentSpace((28, 28, 1), 10, filters=(4, 8, 12, 16, 32))
    hand = search_space.hand_point("cnn", 0.5)
    deeper = search_space.hand_point("cnn", 0.25, stages=4)
    rows = [
        trial_row("01", hand, 0.850, 12120, 11.1),
        trial_row("14", dict(hand, dropout=0.1), 0.860, 12120, 11.0),
        trial_row("34", dict(deeper, stage4_filters=12, head_units=32), 0.856, 11600, 10.6),
        trial_row("42", dict(deeper, stage3_filters=12), 0.850, 9384, 10.5),
    ]
    return space, rows, deeper


def test_final_challengers_are_students_whose_covers_count():
    """A hand point's challenger is the most accurate trial within its cost
    that is no same-cost copy of a hand point, even when a copy scored
    higher: only the former's cover counts as found."""
    from nas import final

    space, rows, _ = _trials_around_cnn_half()
    got = final.entries(rows, top=1, hand=["cnn:0.5"], hypermodel=space)
    assert [e["name"] for e in got if e["source"] == "search"] == ["trial_34"]
    # Copies are still retrained when the spread along the fronts takes them.
    got = final.entries(rows, top=10, hand=["cnn:0.5"], hypermodel=space)
    assert {"trial_14", "trial_34"} <= {e["name"] for e in got if e["source"] == "search"}
    # Without the rule (every row a challenger) the copy would be taken.
    assert [r["trial_id"] for r in final.select(rows[1:], 1, rows[:1])] == ["14"]


def test_final_students_are_timed_together_and_the_budget_applied_again(monkeypatch):
    from nas import final

    calls = []

    def together(models, example=None, num_runs=0, warmup=0, threads=1):
        calls.append((dict(models), example.shape, threads))
        return {
            name: {
                "latency_us_median": 10.0 * (i + 1),
                "latency_us_ci95": [1, 2],
                "latency_runs": 7,
            }
            for i, name in enumerate(models)
        }

    monkeypatch.setattr(final.measure_lib, "latency_together", together)
    search, rows = retime_inputs(max_latency_us=15.0)
    got = final.retime(search, rows)
    assert calls == [({"a": "/x/a.tflite", "b": "/x/b.tflite"}, SHAPE, 1)]
    assert [r["int8_latency_us"] for r in got] == [10.0, 20.0]
    assert [r["int8_latency_us_alone"] for r in got] == [5.0, 5.0]
    assert [r["feasible"] for r in got] == [True, False]
    assert got[1]["violations"].startswith("latency_us+")
    # Timed again (a rerun), the first measurement stays the one kept as "alone".
    final.retime(search, got)
    assert [r["int8_latency_us_alone"] for r in got] == [5.0, 5.0]


def test_final_timing_in_several_processes_takes_each_files_median_process(monkeypatch):
    """With timings=N the files are timed together N times and each row keeps
    the figures of its own median process: one slow process moves no file."""
    from nas import final

    # Per process: (a, b) medians. The second process is slow as a whole.
    # Median processes: a's the third (10.2), b's the first (20.5).
    medians = iter([(10.0, 20.5), (13.0, 26.0), (10.2, 20.0)])
    calls = []

    def together(models, example=None, num_runs=0, warmup=0, threads=1):
        calls.append(dict(models))
        process = next(medians)
        return {
            name: {
                "latency_us_median": m,
                "latency_us_ci95": [m - 0.1, m + 0.1],
                "latency_runs": 100 + len(calls),
            }
            for name, m in zip(models, process)
        }

    monkeypatch.setattr(final.measure_lib, "latency_together", together)
    search, rows = retime_inputs(max_latency_us=21.0)
    got = final.retime(search, rows, timings=3)
    assert len(calls) == 3 and all(c == calls[0] for c in calls)
    assert [r["int8_latency_us"] for r in got] == [10.2, 20.5]
    assert got[1]["int8_latency_us_ci95"] == [20.4, 20.6] and got[1]["int8_latency_runs"] == 101
    assert got[0]["int8_latency_runs"] == 103
    assert [r["int8_latency_us_timings"] for r in got] == [[10.0, 13.0, 10.2], [20.5, 26.0, 20.0]]
    assert [r["feasible"] for r in got] == [True, True]  # b's slow processes do not count
    with pytest.raises(ValueError, match="timings must be >= 1"):
        final.retime(search, rows, timings=0)


class _TestSealedRow(dict):
    """A trial row whose test figures are garbage that fails the test when read."""

    def __getitem__(self, key):
        if "test" in key:
            raise AssertionError(f"the final step's choice read {key}")
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


def test_final_choice_reads_validation_and_costs_never_test_figures():
    """What the final step retrains is chosen from the trials' validation
    accuracy and costs: rows carrying test figures (reading one fails the
    test; a copy would carry garbage, ranked against the validation order)
    give the same choice as rows without them."""
    from nas import final

    space, rows, deeper = _trials_around_cnn_half()
    rows.append(trial_row("50", dict(deeper, stage3_filters=16), 0.840, 9900, 10.8))
    clean = final.entries(rows, top=2, hand=["cnn:0.5"], hypermodel=space)
    garbage = [
        _TestSealedRow(r, test_accuracy=1.0 - r["val_accuracy"], int8_test_accuracy=float("nan"))
        for r in rows
    ]
    assert final.entries(garbage, top=2, hand=["cnn:0.5"], hypermodel=space) == clean
    assert [r["trial_id"] for r in final.select(garbage[1:], 2, garbage[:1])] == [
        r["trial_id"] for r in final.select(rows[1:], 2, rows[:1])
    ]
