"""kd_keras.app.study.pool: studies of one configuration on different seeds, pooled."""

import json
import math

import pytest

from kd_keras.app.study import pool


def _results(seeds, nokd, kd, workdir="w", temperature=2.0, teacher="abc"):
    runs = []
    for s, a, b in zip(seeds, nokd, kd):
        runs.append({"label": "none", "seed": s, "kd": False, "test_accuracy": a})
        runs.append({"label": "none", "seed": s, "kd": True, "test_accuracy": b})
    return {
        "config": {
            "pipeline": {
                "workdir": workdir,
                "kd": {"temperature": temperature},
                "kd_select": None,
            },
            "study": {"seeds": list(seeds)},
        },
        "teacher": [{"weights_digest": teacher}],
        "runs": runs,
    }


def test_pooled_gain_is_the_paired_interval_over_all_seeds():
    a = _results([0, 1], [0.90, 0.92], [0.91, 0.92], workdir="w0")
    b = _results([2, 3], [0.91, 0.93], [0.94, 0.935], workdir="w1")
    b["config"]["pipeline"]["kd_select"] = {"epochs": 20}
    got = pool.pool([("a", a), ("b", b)])["none"]
    assert got["seeds"] == [0, 1, 2, 3]
    assert got["source"] == ["a", "a", "b", "b"]
    # d = [0.01, 0, 0.03, 0.005]: mean 0.01125, sample sd by hand.
    d = [0.01, 0.0, 0.03, 0.005]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    half = 3.182446 * sd / 2  # t(0.975, 3) / sqrt(4)
    g = got["kd_gain"]
    assert g["n"] == 4 and g["mean"] == pytest.approx(mean)
    assert g["low"] == pytest.approx(mean - half, abs=1e-6)
    assert g["high"] == pytest.approx(mean + half, abs=1e-6)
    assert got["kd_accuracy"][0] == pytest.approx((0.91 + 0.92 + 0.94 + 0.935) / 4)


def test_pairing_follows_the_seed_not_the_file_order():
    a = _results([3, 1], [0.90, 0.80], [0.91, 0.81])
    got = pool.pool([("a", a)])["none"]
    assert got["seeds"] == [1, 3] and got["nokd"] == [0.80, 0.90] and got["kd"] == [0.81, 0.91]
    assert got["kd_gain"]["sd"] == pytest.approx(0.0, abs=1e-12)


def test_files_of_different_studies_are_refused_naming_the_entry():
    a = _results([0, 1], [0.9, 0.9], [0.91, 0.9])
    b = _results([2, 3], [0.9, 0.9], [0.91, 0.9], temperature=4.0)
    with pytest.raises(ValueError, match=r"config\.pipeline\.kd\.temperature"):
        pool.pool([("a", a), ("b", b)])
    c = _results([2, 3], [0.9, 0.9], [0.91, 0.9], teacher="other")
    with pytest.raises(ValueError, match="teacher_weights"):
        pool.pool([("a", a), ("c", c)])


def test_a_seed_in_two_files_or_with_one_arm_is_refused():
    a = _results([0, 1], [0.9, 0.9], [0.91, 0.9])
    b = _results([1, 2], [0.9, 0.9], [0.91, 0.9])
    with pytest.raises(ValueError, match="seed 1 of none is in both a and b"):
        pool.pool([("a", a), ("b", b)])
    one_arm = _results([0, 1], [0.9, 0.9], [0.91, 0.9])
    one_arm["runs"].pop()
    with pytest.raises(ValueError, match="seed 1 of none has a run with or without KD"):
        pool.pool([("a", one_arm)])


def test_seeds_needed_only_while_the_interval_holds_zero():
    clear = _results([0, 1, 2], [0.90, 0.90, 0.90], [0.91, 0.915, 0.912])
    assert pool.pool([("a", clear)])["none"]["seeds_to_exclude_zero"] is None
    unclear = _results([0, 1, 2], [0.90, 0.90, 0.90], [0.91, 0.89, 0.905])
    assert pool.pool([("a", unclear)])["none"]["seeds_to_exclude_zero"] > 3


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    paths = []
    for i, seeds in enumerate(([0, 1], [2])):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(_results(seeds, [0.9] * len(seeds), [0.91] * len(seeds))))
        paths.append(str(p))
    out = tmp_path / "pooled.json"
    assert pool.main(paths + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 paired seeds" in printed and "| 2 | 90.00 | 91.00 | +1.00 |" in printed
    assert json.loads(out.read_text())["none"]["seeds"] == [0, 1, 2]


def test_main_gives_one_line_for_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert pool.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot read {bad}")


def test_each_batch_is_reported_apart_beside_the_pooled_gain():
    a = _results([0, 1], [0.90, 0.92], [0.91, 0.92], workdir="w0")
    b = _results([2, 3], [0.91, 0.93], [0.94, 0.935], workdir="w1")
    got = pool.pool([("a", a), ("b", b)])["none"]
    assert [(x["batch"], x["seeds"]) for x in got["batches"]] == [("a", [0, 1]), ("b", [2, 3])]
    assert got["batches"][0]["kd_gain"]["mean"] == pytest.approx(0.005)
    assert got["batches"][1]["kd_gain"]["mean"] == pytest.approx(0.0175)
    assert got["extended"] == []
    text = pool.markdown(pool.pool([("a", a), ("b", b)]))
    assert "| a | 0, 1 | +0.50 [" in text and "| b | 2, 3 | +1.75 [" in text
    assert "| pooled | all 4 |" in text
    assert "interim look" not in text


def test_a_study_extended_after_its_results_is_split_and_marked():
    """A file whose seeds 2, 3 were added to a finished study of seeds 0, 1:
    the declared and the added seeds each get their own line, and the output
    says the pooled interval is not a pre-declared analysis."""
    a = _results([0, 1, 2, 3], [0.90, 0.92, 0.91, 0.93], [0.91, 0.92, 0.94, 0.935])
    a["config"]["study"]["extend_seeds"] = True
    a["seed_extension"] = {"declared": [0, 1], "added": [2, 3]}
    b = _results([4, 5], [0.90, 0.90], [0.91, 0.92], workdir="w4")
    pooled = pool.pool([("a", a), ("b", b)])
    got = pooled["none"]
    assert [(x["batch"], x["seeds"]) for x in got["batches"]] == [
        ("a (declared)", [0, 1]),
        ("a (added)", [2, 3]),
        ("b", [4, 5]),
    ]
    assert got["extended"] == [{"file": "a", "declared": [0, 1], "added": [2, 3]}]
    assert got["kd_gain"]["n"] == 6
    text = pool.markdown(pooled)
    assert "Seeds added after an interim look** (a)" in text
    assert "declared seeds [0, 1]; seeds [2, 3] were added" in text
    assert "not a pre-declared analysis" in text
    assert "| a (added) | 2, 3 | +1.75 [" in text
