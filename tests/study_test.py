"""The study: aggregation by hand, the smoke study end to end, kill and resume."""

import json
import math
import os
import signal
import socket
import time

import numpy as np
import pytest
from conftest import trivial_fit_study
from scipy import stats as sp_stats

from kd_keras import data as data_lib
from kd_keras import runs
from kd_keras.app.study import pool, runner, views

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)


def _row(label, kd, seed, acc):
    return {
        "label": label,
        "kd": kd,
        "seed": seed,
        "test_accuracy": acc,
        "params": 100,
        "export": [
            {
                "format": "int8",
                "threads": 1,
                "accuracy": acc - 0.001,
                "gzip_bytes": 1000 if label == "none" else 600,
                "latency_us_median": 10.0,
            }
        ],
    }


def test_summary_by_hand_on_fixed_inputs():
    acc = {
        ("none", False): [0.80, 0.82, 0.81],
        ("none", True): [0.83, 0.84, 0.85],
        ("prune", False): [0.78, 0.80, 0.79],
        ("prune", True): [0.80, 0.81, 0.83],
    }
    rows = [
        _row(label, kd, s, a) for (label, kd), accs in acc.items() for s, a in zip((0, 1, 2), accs)
    ]
    summary = views.summarize(rows, (0, 1, 2))
    # KD gain of 'none': d = [0.03, 0.02, 0.04] -> mean 0.03, sd 0.01.
    g = summary["none"]["kd_gain"]
    half = sp_stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert g["mean"] == pytest.approx(0.03)
    assert (g["low"], g["high"]) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    # 'prune': d = [0.02, 0.01, 0.04] -> mean 0.02333; ratio 0.02333 / 0.03.
    gp = summary["prune"]["kd_gain"]["mean"]
    assert gp == pytest.approx(0.07 / 3)
    assert summary["prune"]["orthogonality_ratio"] == pytest.approx((0.07 / 3) / 0.03)
    # Additivity: measured = prune+KD - none = [0, -0.01, 0.02] -> 0.00333;
    # expected = (prune - none) + (KD - none) = [0.01, 0.0, 0.02] -> 0.01.
    add = summary["prune"]["additivity"]
    assert add["measured"] == pytest.approx(0.01 / 3)
    assert add["expected"] == pytest.approx(0.01)
    assert summary["none"]["keras_accuracy"]["kd"][0] == pytest.approx(0.84)
    assert summary["none"]["tflite_accuracy"]["int8"]["kd"][0] == pytest.approx(0.839)
    assert summary["prune"]["int8_gzip_bytes"] == 600


def test_the_main_table_shows_validation_accuracy_and_a_dash_where_a_run_has_none():
    from kd_keras.app.study import report

    accs = {("none", False): [0.80, 0.82], ("none", True): [0.83, 0.85]}
    rows = [
        dict(_row(label, kd, s, a), val_accuracy=a + 0.01)
        for (label, kd), values in accs.items()
        for s, a in zip((0, 1), values)
    ]
    summary = views.summarize(rows, (0, 1))
    assert summary["none"]["val_accuracy"]["nokd"][0] == pytest.approx(0.82)
    assert summary["none"]["val_accuracy"]["kd"][0] == pytest.approx(0.85)
    line = report.orthogonality_table(summary).splitlines()[2]
    assert "| 82.00 ± 1.41 / 85.00 ± 1.41 |" in line
    # A run without it (no validation split, or results written before it was kept).
    del rows[0]["val_accuracy"]
    summary = views.summarize(rows, (0, 1))
    assert summary["none"]["val_accuracy"]["nokd"] is None
    assert "| – / 85.00 ± 1.41 |" in report.orthogonality_table(summary).splitlines()[2]


def test_variance_view_by_hand():
    labels = np.array([0, 1, 1, 0])
    onehot = lambda classes: np.eye(2)[classes]  # noqa: E731
    probs = {  # no KD: members right on 3/4 and 2/4; their average on 3/4.
        "none-nokd-s0": onehot([0, 1, 1, 1]),
        "none-nokd-s1": 0.9 * onehot([0, 0, 1, 1]) + 0.05,
        "none-kd-s0": onehot([0, 1, 1, 0]),
        "none-kd-s1": onehot([0, 1, 1, 0]),
    }
    view = views.variance_view(probs, (0, 1), labels)
    nokd, kd = view["nokd"], view["kd"]
    assert nokd["disagreement"] == pytest.approx(0.25) and kd["disagreement"] == 0.0
    assert nokd["member_accuracy"][0] == pytest.approx(0.625)
    assert nokd["ensemble_accuracy"] == pytest.approx(0.75)
    assert nokd["ensemble_gain"] == pytest.approx(0.125)
    assert kd["ensemble_accuracy"] == 1.0 and kd["ensemble_gain"] == 0.0
    # Per example and class: var of two values a, b (ddof=1) is (a - b)^2 / 2.
    diff = probs["none-nokd-s0"] - probs["none-nokd-s1"]
    assert nokd["prediction_variance"] == pytest.approx(float(np.mean(diff**2 / 2)))


def test_report_states_the_setup_and_the_augmentation_comparison():
    from kd_keras.app.pipeline import PipelineConfig
    from kd_keras.app.study import report
    from kd_keras.distill import KDConfig

    acc = {
        ("none", False): [0.80, 0.82],
        ("none", True): [0.83, 0.84],
        ("augment", False): [0.78, 0.80],
        ("augment", True): [0.82, 0.83],
    }
    rows = [
        _row(label, kd, s, a) for (label, kd), accs in acc.items() for s, a in zip((0, 1), accs)
    ]
    p = PipelineConfig(workdir="/tmp/x", kd=KDConfig(alpha=0.3, temperature=2.0))
    summary = views.summarize(rows, (0, 1))
    results = {
        "dataset": "d",
        "seeds": [0, 1],
        "techniques": ["none", "augment"],
        "summary": dict(sorted(summary.items())),  # as read back from results.json
        "config": {"pipeline": runs.spec_of(p)},
    }
    text = report.markdown(results)
    assert text.index("| none |") < text.index("| augment |")  # the study's order
    assert "T = 2, alpha = 0.3" in text
    assert "## KD against explicit data augmentation" in text
    # KD gain with augmentation: [0.04, 0.03] -> +3.50; both vs plain: [0.02, 0.01] -> +1.50;
    # sum of parts: (aug - none) + (KD - none) = [-0.02 + 0.03, -0.02 + 0.02] -> +0.50.
    assert "| augmentation | 79.00 ± 1.41 | 82.50 ± 0.71 | +3.50 [" in text
    # Difference per seed: [0.02 - 0.01, 0.01 - 0.00] -> +1.00, its interval given.
    assert "measured +1.50 pts, sum of the separate effects +0.50 pts, difference +1.00 [" in text
    # Δ(none) = +2.5 pts but with 2 seeds its interval [-3.85, +8.85] contains 0.
    assert "Δ(none)'s interval contains 0" in text
    # d = [0.03, 0.02]: sd 0.71 pts; t_{0.975, 2} / sqrt(3) = 4.303 / 1.732 = 2.48 < 2.5 / 0.71.
    assert "(sd 0.71 pts) of these 2 seeds held, about 3 seeds would give" in text
    steady = [
        _row("none", kd, s, 0.80 + 0.001 * s + (0.03 if kd else 0.0))
        for kd in (False, True)
        for s in (0, 1, 2)
    ]
    steady[-1]["test_accuracy"] += 0.001  # d = [0.03, 0.03, 0.031]: well away from 0
    results.update(seeds=[0, 1, 2], techniques=["none"], summary=views.summarize(steady, (0, 1, 2)))
    assert "interval contains 0" not in report.markdown(results)


def test_progress_estimates_from_trained_runs_only(capsys):
    progress = runner.Progress(total=4)
    progress.step("a", 0.5, reused=True)
    assert "ETA unknown" in capsys.readouterr().out
    progress.step("b", 60.0, reused=False)
    progress.step("c", 120.0, reused=False)
    out = capsys.readouterr().out.splitlines()
    # Two trained runs took 90 s on average; one run is left.
    assert out[-1].startswith("[study] 3/4 c (120s); 1 left") and "ETA 1.5 min" in out[-1]
    progress.step("d", 0.1, reused=True)
    assert "0 left" in capsys.readouterr().out


def test_bad_study_config():
    from kd_keras.app.pipeline import PipelineConfig

    p = PipelineConfig(workdir="/tmp/x")
    with pytest.raises(ValueError, match="Unknown study techniques"):
        runner.StudyConfig(pipeline=p, techniques=("none", "nas"))
    with pytest.raises(ValueError, match="'none'"):
        runner.StudyConfig(pipeline=p, techniques=("qat",))
    with pytest.raises(ValueError, match="bagging_members"):
        runner.StudyConfig(pipeline=p, bagging_members=1)


def _study(workdir, tuner_id=None, port=None):
    """The tiny smoke study with trivial training (conftest.TRIVIAL_FIT_MAIN),
    without TFLite export (latency differs between processes); with
    `tuner_id`, as that keras-tuner process of a chief/worker study. A run
    takes under a second: long enough to kill the study between runs, and for
    both workers to get runs."""
    env = dict(os.environ)
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    if tuner_id:
        env.update(
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port),
        )
    return trivial_fit_study(workdir, "--export_formats=", env=env, fit_seconds=0.2)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deterministic(results):
    """The numbers of results.json that training fixes (no timings, no paths)."""
    runs = {
        r["name"]: (r["test_accuracy"], r["weights_digest"], r["params"]) for r in results["runs"]
    }
    summary = {
        label: {k: e[k] for k in ("keras_accuracy", "kd_gain", "orthogonality_ratio")}
        for label, e in results["summary"].items()
    }
    bagging = {
        budget: {k: v for k, v in view.items() if k != "budget"}
        for budget, view in results["bagging"].items()
    }
    return {
        "runs": runs,
        "bagging": bagging,
        "teacher_ensemble": results.get("teacher_ensemble"),
        "verdict": results["kd_as_bagging"],
        "summary": summary,
        "additivity": results["additivity"],
        "variance": results["variance"],
        "teacher": [r["test_accuracy"] for r in results["teacher"]],
    }


def _finished(workdir):
    root = os.path.join(workdir, "runs")
    if not os.path.isdir(root):
        return {}
    return {
        d: os.path.getmtime(os.path.join(root, d, "result.json"))
        for d in os.listdir(root)
        if os.path.exists(os.path.join(root, d, "result.json"))
    }


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.slow(120)
def test_a_killed_study_resumes_and_a_distributed_one_gives_its_report(tmp_path):
    """The tiny smoke study with trivial training, killed with SIGKILL after four
    finished runs and run again: it trains only what was not finished, and
    aggregates every run into the report (checked against a hand computation).
    Then the same study with a chief and two workers on 127.0.0.1 sharing
    another workdir gives the same numbers and report."""
    workdir = str(tmp_path / "study")
    proc = _study(workdir)
    deadline = time.time() + 600
    while len(_finished(workdir)) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "the study ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished(workdir)
    assert len(before) >= 4 and not os.path.exists(os.path.join(workdir, "report.md"))

    again = _study(workdir)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    after = _finished(workdir)
    for run_dir, mtime in before.items():  # finished runs were not trained again
        assert after[run_dir] == mtime
    assert len(after) > len(before)
    assert "cached" in out and "ETA" in out

    results = json.load(open(os.path.join(workdir, "results.json")))
    for name in ("report.md", "kd_gain.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    # Aggregation agrees with a hand computation from the runs themselves.
    acc = {(r["label"], r["kd"], r["seed"]): r["test_accuracy"] for r in results["runs"]}
    for label in ("none", "prune50"):
        d = [acc[(label, True, s)] - acc[(label, False, s)] for s in (0, 1)]
        gain = results["summary"][label]["kd_gain"]
        assert gain["mean"] == pytest.approx(np.mean(d))
        half = sp_stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / math.sqrt(2)
        assert gain["high"] == pytest.approx(np.mean(d) + half)
    assert set(results["variance"]) == {"nokd", "kd"}
    assert results["bagging"]["total"]["members"] == 2
    assert set(results["bagging"]) == {"total", "member"}
    assert results["kd_as_bagging"]["verdict"]
    assert "kd_teacher_ensemble" in results["teacher_ensemble"]
    text = open(os.path.join(workdir, "report.md")).read()
    assert "| prune50 |" in text and "Bagging baseline" in text
    # The tested sections, and bootstrap intervals over seeds and test images.
    assert "## Additivity, tested" in text and "## KD's gain per technique, tested" in text
    boot = results["bagging_intervals"]["disagreement"]["kd_minus_nokd"]
    assert boot["over"] == "seeds and images" and boot["resamples"] == 2000
    assert set(results["evidence"]["gains"]) == {"none", "prune50"}

    # Once seed 0 had ended (in the killed run or, from the cache, in the
    # resumed one) the report of seed 0 alone went to interim/.
    interim = json.load(open(os.path.join(workdir, "interim", "results.json")))
    assert interim["interim"] == {"seeds_done": [0], "seeds_planned": [0, 1]}
    assert interim["config"]["study"]["seeds"] == [0]
    seed0 = sorted(
        (r["label"], r["kd"], r["test_accuracy"]) for r in results["runs"] if r["seed"] == 0
    )
    assert sorted((r["label"], r["kd"], r["test_accuracy"]) for r in interim["runs"]) == seed0
    assert "bagging" not in interim and "teacher_ensemble" not in interim
    assert "Interim report: seeds [0]" in open(os.path.join(workdir, "interim", "report.md")).read()
    assert pool.pool([("interim", interim)])["none"]["seeds"] == [0]

    # The same study, distributed: a chief (the oracle) and two workers.
    shared = str(tmp_path / "distributed")
    port = _free_port()
    procs = {t: _study(shared, t, port) for t in ("chief", "tuner0", "tuner1")}
    outs = {t: p.communicate(timeout=900) for t, p in procs.items()}
    for t, p in procs.items():
        assert p.returncode == 0, f"{t}:\n{outs[t][1][-3000:]}"
    assert "Study report written" in outs["chief"][0]
    for t in ("tuner0", "tuner1"):
        assert "no study runs left" in outs[t][0]
        assert "[study]" in outs[t][0]  # Both workers ran trials.
    got = json.load(open(os.path.join(shared, "results.json")))
    assert _deterministic(got) == _deterministic(results)
    # Every run directory was trained once: one result, no corrupt copies.
    names = os.listdir(os.path.join(shared, "runs"))
    assert not [n for n in names if ".corrupt-" in n]
    assert sorted(n for n in names if not n.endswith(".lock")) == sorted(
        n for n in os.listdir(os.path.join(workdir, "runs")) if not n.endswith(".lock")
    )
    # The markdown reports agree too (no timings or latencies without export).
    assert open(os.path.join(shared, "report.md")).read() == text


def test_over_budget_names_the_limits_a_technique_exceeds():
    entry = {"int8_file_bytes": 12000, "int8_arena_bytes": 20000, "int8_latency_us_median": 9.0}
    assert runner.over_budget(entry, None) == []
    assert runner.over_budget(entry, {"max_bytes": 16000, "max_arena_bytes": 16000}) == [
        "max_arena_bytes"
    ]
    assert runner.over_budget(entry, {"max_latency_us": 8.0, "max_bytes": 0}) == ["max_latency_us"]
    # A limited figure that was not measured counts as over the budget.
    assert runner.over_budget({}, {"max_arena_bytes": 1}) == ["max_arena_bytes"]
    with pytest.raises(ValueError, match="max_flash"):
        runner.StudyConfig(pipeline=None, budget={"max_flash": 1})


def test_additivity_pairs_cover_kd_and_compositions_by_hand():
    seeds = (0, 1, 2)
    acc = {
        "none": ([0.80, 0.82, 0.81], [0.83, 0.84, 0.85]),
        "prune50": ([0.78, 0.80, 0.79], [0.80, 0.81, 0.83]),
        "qat": ([0.79, 0.82, 0.80], [0.82, 0.83, 0.85]),
        "prune50+qat": ([0.77, 0.79, 0.79], [0.80, 0.80, 0.82]),
    }
    rows = [
        _row(label, kd, s, a[kd][i])
        for label, a in acc.items()
        for kd in (False, True)
        for i, s in enumerate(seeds)
    ]
    pairs = {(tuple(e["pair"]), e["kd"]): e for e in views.additivity_pairs(rows, seeds)}
    assert set(pairs) == {
        (("KD", "prune50"), None),
        (("KD", "qat"), None),
        (("KD", "prune50+qat"), None),
        (("prune50", "qat"), False),
        (("prune50", "qat"), True),
    }
    # prune50 x qat without KD, per seed: both - p - q + none = [0.00, -0.01, 0.01].
    e = pairs[(("prune50", "qat"), False)]
    d = np.array([0.77 - 0.78 - 0.79 + 0.80, 0.79 - 0.80 - 0.82 + 0.82, 0.79 - 0.79 - 0.80 + 0.81])
    half = sp_stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert e["interaction"]["mean"] == pytest.approx(d.mean())
    assert e["interaction"]["low"] == pytest.approx(d.mean() - half)
    # KD x prune50 = Δ(prune50) - Δ(none) per seed.
    kd = pairs[(("KD", "prune50"), None)]["interaction"]
    d = np.subtract(acc["prune50"][1], acc["prune50"][0]) - np.subtract(*acc["none"][::-1])
    assert kd["mean"] == pytest.approx(d.mean())
    assert kd["high"] == pytest.approx(d.mean() + sp_stats.t.ppf(0.975, 2) * d.std(ddof=1) / 3**0.5)
    from kd_keras.app.study import evidence, findings

    results = {"runs": rows, "seeds": list(seeds), "techniques": list(acc)}
    ev = evidence.analyze(results)
    # The tested pairs are the same pairs with the same per-seed interactions.
    tested = {(tuple(e["pair"]), e["kd"]): e for e in ev["interactions"]}
    assert set(tested) == set(pairs)
    for key, e in tested.items():
        assert e["interval"]["mean"] == pytest.approx(pairs[key]["interaction"]["mean"])
    text = "\n".join(findings.additivity_section(ev))
    assert "| prune50 × qat | no KD |" in text and "| KD × qat | vs plain student |" in text


def test_bagging_verdict_reads_intervals_never_point_estimates():
    from kd_keras.app.study import report

    var = {
        "nokd": {"disagreement": 0.05, "ensemble_gain": 0.010},
        "kd": {"disagreement": 0.03, "ensemble_gain": 0.004},
    }
    bag = {"bag_accuracy": 0.82}
    results = {"variance": var, "bagging": {"member": bag}, "seeds": [0, 1], "runs": []}
    # Without intervals the lower disagreement is only described, never a sign "for".
    v = report.bagging_verdict(results, {"intervals": {}, "note": ""})
    assert v["signs"] == {
        "disagreement": "untested",
        "ensemble_gain": "untested",
        "bag_member": "untested",
    }
    assert v["verdict"].startswith("Not tested")

    def iv(low, high):
        return {"estimate": (low + high) / 2, "low": low, "high": high}

    intervals = {
        "disagreement": {"kd_minus_nokd": iv(-0.03, -0.01)},
        "ensemble_gain": {"kd_minus_nokd": iv(-0.01, 0.002)},
        "bags": {
            "member": {
                "bag_gain": iv(0.01, 0.02),
                "kd_gain": iv(0.0, 0.01),
                "share_test": iv(0.001, 0.005),
            }
        },
    }
    v = report.bagging_verdict(results, {"intervals": intervals, "note": ""})
    assert v["signs"] == {
        "disagreement": "for",
        "ensemble_gain": "inconclusive",
        "bag_member": "for",
    }
    assert v["verdict"].startswith("Not settled") and "inconclusive: ensemble_gain" in v["verdict"]
    intervals["ensemble_gain"]["kd_minus_nokd"] = iv(-0.01, -0.001)
    v = report.bagging_verdict(results, {"intervals": intervals, "note": ""})
    assert v["verdict"].startswith("Supported on the 3 sign(s) tested")
    # A bag that does not beat the plain student gives no sign.
    intervals["bags"]["member"]["bag_gain"] = iv(-0.02, -0.01)
    v = report.bagging_verdict(results, {"intervals": intervals, "note": ""})
    assert "bag_member" not in v["signs"]
    assert any("does not beat the plain student" in s for s in v["sentences"])


def test_seeds_are_added_to_a_finished_study_only_with_extend_seeds(tmp_path, monkeypatch):
    from conftest import tiny_pipeline_config

    workdir = str(tmp_path / "w")

    def study(seeds, extend=False):
        return runner.StudyConfig(
            pipeline=tiny_pipeline_config(workdir),
            techniques=("none",),
            seeds=seeds,
            bagging_members=0,
            extend_seeds=extend,
        )

    # No finished study yet: any seeds.
    assert pool.seed_extension(workdir, (0, 1, 2)) is None
    runs.write_json(os.path.join(workdir, "results.json"), {"seeds": [0, 1]})
    assert pool.seed_extension(workdir, (0, 1)) is None
    # Refused in one line, before any data is loaded.
    monkeypatch.setattr(runner, "load_data", lambda config: pytest.fail("data was loaded"))
    with pytest.raises(ValueError, match=r"seeds \[0, 1\]; --seeds adds \[2, 3\]") as e:
        runner.run(study((0, 1, 2, 3)))
    assert "--extend_seeds" in str(e.value) and "\n" not in str(e.value)
    got = pool.seed_extension(workdir, (0, 1, 2, 3), True)
    assert got == {"declared": [0, 1], "added": [2, 3]}
    # The extended study's results keep the record; the first design stays the declared one.
    runs.write_json(
        os.path.join(workdir, "results.json"), {"seeds": [0, 1, 2, 3], "seed_extension": got}
    )
    assert pool.seed_extension(workdir, (0, 1, 2, 3)) == got
    with pytest.raises(ValueError, match="--extend_seeds"):
        pool.seed_extension(workdir, (0, 1, 2, 3, 4))
    again = pool.seed_extension(workdir, (0, 1, 2, 3, 4), True)
    assert again == {"declared": [0, 1], "added": [2, 3, 4]}
