"""The study's tests and verdicts against hand computations."""

import json
import math

import numpy as np
import pytest

from kd_keras.app.study import evidence, findings, report, runner, stats, views


def _t2_cdf(t):
    """The t distribution's CDF with 2 degrees of freedom, in closed form."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def test_paired_t_p_by_hand():
    # d = [0.1, 0.2, 0.3]: mean 0.2, sd 0.1, se 0.1 / sqrt(3), t = 2 sqrt(3), 2 d.o.f.
    t = 2 * math.sqrt(3)
    assert stats.paired_t_p([0.1, 0.2, 0.3]) == pytest.approx(2 * (1 - _t2_cdf(t)))
    assert stats.paired_t_p([0.1, 0.1]) == 0.0  # no spread, nonzero mean
    assert math.isnan(stats.paired_t_p([0.1]))


def test_tost_by_hand():
    d = [0.1, 0.2, 0.3]
    se = 0.1 / math.sqrt(3)
    got = stats.tost(d, margin=0.5, alpha=0.05)
    p_low = 1 - _t2_cdf((0.2 + 0.5) / se)  # H0: mean <= -0.5
    p_high = _t2_cdf((0.2 - 0.5) / se)  # H0: mean >= +0.5
    assert got["p"] == pytest.approx(max(p_low, p_high)) == pytest.approx(0.017549, abs=1e-6)
    # The 90% interval: t_{0.95, 2} = 2.919986.
    assert got["low"] == pytest.approx(0.2 - 2.919986 * se, abs=1e-6)
    assert got["high"] == pytest.approx(0.2 + 2.919986 * se, abs=1e-6)
    # TOST passes exactly when the 90% interval lies inside the margin.
    assert got["p"] <= 0.05 and -0.5 < got["low"] and got["high"] < 0.5
    narrow = stats.tost(d, margin=0.25)
    assert narrow["p"] == pytest.approx(_t2_cdf((0.2 - 0.25) / se), abs=1e-9)
    assert narrow["p"] > 0.05 and narrow["high"] > 0.25
    with pytest.raises(ValueError, match="margin > 0"):
        stats.tost(d, margin=0)


def test_wilcoxon_against_the_table_of_sign_patterns():
    # All 5 of one sign: W- = 0; P(W- <= 0) = 1/32, two-sided 2/32.
    got = stats.wilcoxon([0.01, 0.02, 0.03, 0.04, 0.05])
    assert got == {"p": pytest.approx(2 / 32), "n": 5, "min_p": pytest.approx(2 / 32)}
    # 6 values, the one of rank 2 negative: W- = 2; subsets of 1..6 summing to
    # <= 2 are {}, {1}, {2}: P = 3/64, two-sided 6/64.
    got = stats.wilcoxon([0.01, -0.02, 0.03, 0.04, 0.05, 0.06])
    assert got["p"] == pytest.approx(6 / 64) and got["min_p"] == pytest.approx(2 / 64)
    # Zeros are dropped: five nonzero differences remain.
    assert stats.wilcoxon([0.0, 1, 2, 3, 4, 5])["n"] == 5
    assert math.isnan(stats.wilcoxon([0.0, 0.0])["p"])


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    got = stats.holm([0.01, 0.04, 0.03, math.nan])
    assert got[:3] == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06)]
    assert math.isnan(got[3])
    assert stats.holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_verdict_rule():
    assert stats.verdict(0.02, 0.01, 0.9, 0.05) == ("difference", 1)
    assert stats.verdict(-0.02, 0.01, 0.9, 0.05) == ("difference", -1)
    assert stats.verdict(0.001, 0.6, 0.01, 0.05) == ("equivalent", 0)
    assert stats.verdict(0.002, 0.01, 0.01, 0.05) == ("small difference", 1)
    # An interval containing 0 without a passing TOST is not "additive".
    assert stats.verdict(0.001, 0.6, 0.2, 0.05) == ("inconclusive", 0)
    assert stats.verdict(0.1, math.nan, math.nan, 0.05) == ("inconclusive", 0)


def test_bootstrap_is_reproducible_with_a_fixed_seed():
    x = np.array([0.1, 0.4, 0.2, 0.9, 0.5])

    def mean(s, _):
        return x[s].mean()

    a = stats.bootstrap(mean, 5, resamples=500, seed=3)
    assert a == stats.bootstrap(mean, 5, resamples=500, seed=3)
    assert a != stats.bootstrap(mean, 5, resamples=500, seed=4)
    assert a["estimate"] == pytest.approx(x.mean()) and a["over"] == "seeds"
    assert a["low"] < x.mean() < a["high"]
    # Two seeds of 0 and 1: resampled means are 0, 0.5, 1 with 1/4, 1/2, 1/4.
    two = stats.bootstrap(lambda s, _: np.array([0.0, 1.0])[s].mean(), 2, resamples=2000)
    assert (two["low"], two["high"]) == (0.0, 1.0)
    # Images too: a statistic of the images alone varies only through them.
    y = np.arange(10.0)
    both = stats.bootstrap(lambda s, i: y[i].mean(), 3, 10, resamples=300, seed=0)
    assert both["over"] == "seeds and images" and both["low"] < 4.5 < both["high"]


def _probs(pred, classes=3):
    return np.eye(classes)[np.asarray(pred)] * 0.8 + 0.2 / classes


def test_bagging_bootstrap_estimates_are_the_point_figures():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    plain = _probs([[0, 1, 2, 0, 1, 2, 1, 1], [0, 2, 2, 0, 1, 0, 0, 1], [1, 1, 2, 0, 0, 2, 0, 1]])
    kd = _probs([[0, 1, 2, 0, 1, 2, 0, 1], [0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 0, 1, 2, 0, 0]])
    bag = _probs([[0, 1, 2, 0, 1, 2, 0, 0], [0, 1, 1, 0, 1, 2, 0, 1]])
    got = evidence.bagging_bootstrap(plain, kd, labels, {"member": bag}, resamples=200, seed=1)
    again = evidence.bagging_bootstrap(plain, kd, labels, {"member": bag}, resamples=200, seed=1)
    assert got == again
    d0 = stats.disagreement(plain.argmax(-1))
    d1 = stats.disagreement(kd.argmax(-1))
    assert got["disagreement"]["nokd"]["estimate"] == pytest.approx(d0)
    assert got["disagreement"]["kd_minus_nokd"]["estimate"] == pytest.approx(d1 - d0)

    def ens_gain(p):
        members = np.mean([np.mean(m.argmax(-1) == labels) for m in p])
        return np.mean(p.mean(0).argmax(-1) == labels) - members

    assert got["ensemble_gain"]["kd"]["estimate"] == pytest.approx(ens_gain(kd))
    bag_acc = np.mean(bag.mean(0).argmax(-1) == labels)
    member = got["bags"]["member"]
    assert member["bag_accuracy"]["estimate"] == pytest.approx(bag_acc)
    plain_mean = np.mean([np.mean(m.argmax(-1) == labels) for m in plain])
    assert member["bag_gain"]["estimate"] == pytest.approx(bag_acc - plain_mean)
    assert member["share_test"]["over"] == "seeds and images"
    for e in (member["bag_gain"], got["disagreement"]["nokd"]):
        assert e["low"] <= e["estimate"] <= e["high"]


def _rows(acc, seeds):
    return [
        {"label": label, "kd": kd, "seed": s, "test_accuracy": a[kd][i], "params": 10}
        for label, a in acc.items()
        for kd in (False, True)
        for i, s in enumerate(seeds)
    ]


def _study(margin=0.5):
    seeds = (0, 1, 2, 3, 4)
    none = [0.800, 0.810, 0.805, 0.795, 0.802]
    gain = np.array([0.020, 0.022, 0.018, 0.021, 0.019])
    acc = {
        "none": (none, list(np.add(none, gain))),
        # Same gain as 'none' to within 0.01 pts: additive within the margin.
        "qat": (none, list(np.add(none, gain + [0.0001, -0.0001, 0.0, 0.0001, -0.0001]))),
        # KD gains nothing here: an interaction of -2 pts.
        "dws": (none, list(np.add(none, [0.001, -0.001, 0.0, 0.0005, -0.0005]))),
        # Noisy: neither shown.
        "prune90": (none, list(np.add(none, [0.05, -0.03, 0.04, -0.02, 0.01]))),
    }
    results = {
        "runs": _rows(acc, seeds),
        "seeds": list(seeds),
        "techniques": list(acc),
        "config": {"study": {"alpha": 0.05, "equivalence_margin": margin}},
    }
    return results, gain


def test_analyze_tests_every_technique_and_holm_adjusts_across_them():
    results, gain = _study()
    ev = evidence.analyze(results)
    assert list(ev["gains"]) == ["none", "qat", "dws", "prune90"]
    g = ev["gains"]["none"]
    assert g["interval"]["mean"] == pytest.approx(gain.mean())
    assert g["p"] == pytest.approx(stats.paired_t_p(gain))
    raw = [ev["gains"][t]["p"] for t in ev["gains"]]
    assert [ev["gains"][t]["p_holm"] for t in ev["gains"]] == stats.holm(raw)
    assert g["words"] == "KD gains"
    assert ev["gains"]["dws"]["words"] == "no difference within ±0.5 pts"
    words = {e["pair"][1]: e["words"] for e in ev["interactions"]}
    assert words == {
        "qat": "additive within ±0.5 pts",
        "dws": "interaction (less than additive)",
        "prune90": "inconclusive",
    }
    # A margin too narrow for these seeds: the same data are no longer "additive".
    results["config"]["study"]["equivalence_margin"] = 0.001
    narrow = {e["pair"][1]: e["outcome"] for e in evidence.analyze(results)["interactions"]}
    assert narrow["qat"] == "inconclusive"


def test_report_shows_the_tested_sections_and_words_from_outcomes():
    results, _ = _study()
    results["summary"] = views.summarize(results["runs"], tuple(results["seeds"]))
    results["dataset"] = "d"
    text = report.markdown(results)
    for heading in (
        "## What the tests support",
        "## The statistical design",
        "## KD's gain per technique, tested",
        "## Additivity, tested",
    ):
        assert heading in text
    assert "* KD × technique, **additive within ±0.5 pts**: qat" in text
    assert "| KD × dws | vs plain student |" in text
    assert "The design is declared in the study's flagfile" in text
    # The Wilcoxon test cannot reach 0.05 with 5 seeds, and the report says so.
    assert "smallest possible two-sided p is 0.0625" in text
    del results["config"]
    assert "the defaults apply" in report.markdown(results)
    table = "\n".join(findings.gains_section(evidence.analyze(results)))
    assert table.count("| KD gains |") == 2 and "| prune90 | 5 |" in table


def test_a_report_is_rendered_again_from_results_json_alone(tmp_path, capsys):
    results, _ = _study()
    results["summary"] = views.summarize(results["runs"], tuple(results["seeds"]))
    results["dataset"] = "d"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert report.main([str(path)]) == 0
    assert (tmp_path / "report.md").read_text() == report.markdown(results)
    doc = tmp_path / "doc.md"
    doc.write_text("# Finding\n\nkept\n\n# The generated report (x)\n\nold table\n")
    assert report.main([str(path), f"--into={doc}"]) == 0
    out = doc.read_text()
    assert out.startswith("# Finding\n\nkept\n\n# The generated report (x)\n\n")
    assert "old table" not in out and "## Additivity, tested" in out
    assert "# Orthogonality study" not in out  # the generated title is dropped
    assert report.main([str(tmp_path / "missing.json")]) == 2
    assert "cannot render" in capsys.readouterr().err


def test_study_config_checks_the_design():
    from kd_keras.app.pipeline import PipelineConfig

    p = PipelineConfig(workdir="/tmp/x")
    with pytest.raises(ValueError, match="equivalence_margin"):
        runner.StudyConfig(pipeline=p, equivalence_margin=0.0)
    with pytest.raises(ValueError, match="primary_metric"):
        runner.StudyConfig(pipeline=p, primary_metric="loss")
    assert runner.StudyConfig(pipeline=p, alpha=0.01).alpha == 0.01


def test_the_report_of_an_extended_study_names_its_declared_and_added_seeds():
    results, gain = _study()
    results["summary"] = views.summarize(results["runs"], tuple(results["seeds"]))
    results["dataset"] = "d"
    plain = report.markdown(results)
    assert "fixed before the runs" in plain and "interim look" not in plain
    results["seed_extension"] = {"declared": [0, 1, 2], "added": [3, 4]}
    text = report.markdown(results)
    assert "fixed before the runs" not in text
    assert "[0, 1, 2] declared before the runs, [3, 4] added after" in text
    assert "## Seeds added after an interim look" in text
    assert "not a pre-declared analysis" in text
    # KD's gain over each batch apart and pooled, for every technique.
    row = next(x for x in text.splitlines() if x.startswith("| none | +"))
    declared, added, pooled = (
        stats.paired_interval(gain[s], np.zeros(len(gain[s])))["mean"]
        for s in (slice(0, 3), slice(3, 5), slice(0, 5))
    )
    assert row.startswith(f"| none | {100 * declared:+.2f} [")
    assert f"| {100 * added:+.2f} [" in row and f"| {100 * pooled:+.2f} [" in row
