"""The pipeline report: KD gains pair each KD student with its plain twin."""

import types

import numpy as np

from kd_keras.app import pipeline, report, variants


def _row(techniques, kd, acc, seed=0, role="student"):
    return {"techniques": techniques, "kd": kd, "test_accuracy": acc, "seed": seed, "role": role}


def test_kd_gains_pair_students_of_one_chain_and_seed():
    models = [
        _row("", False, 0.9, role="teacher"),
        _row("none", False, 0.80),
        _row("none", True, 0.83),
        _row("prune+qat", True, 0.79),
        _row("prune+qat", False, 0.81),
        _row("none", True, 0.99, seed=1),  # No plain twin of seed 1: no row.
    ]
    gains = report.kd_gains(models)
    assert [(g["techniques"], g["gain_pts"]) for g in gains] == [("none", 3.0), ("prune+qat", -2.0)]
    text = report.gains_markdown(gains)
    assert "| none | 0.8000 | 0.8300 | +3.00 |" in text and "-2.00" in text


def test_a_runs_files_are_timed_together_and_keep_their_own_figures(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.tflite"))
        open(paths[-1], "wb").close()
    rows = [
        {"export": [{"path": paths[0], "threads": 1, "latency_us_median": 10.6}]},
        {"export": [{"path": paths[1], "threads": 1, "latency_us_median": 14.6}]},
        {"export": [{"path": paths[2], "threads": 2, "latency_us_median": 9.0}]},  # Alone.
        {"name": "no export"},
    ]
    asked = []

    def together(models, example, num_runs, threads, **kwargs):
        asked.append((sorted(models.values()), threads))
        return {key: {"latency_us_median": 12.0, "latency_runs": 300} for key in models}

    monkeypatch.setattr(variants.export_measure, "latency_together", together)
    ctx = types.SimpleNamespace(
        data=types.SimpleNamespace(x_test=np.zeros((1, 2, 2, 1), np.uint8)),
        export=variants.ExportSettings(latency_runs=50),
    )
    variants.time_together(rows, ctx)
    assert asked == [(paths[:2], 1)]  # One process for the files of one thread count.
    first, second = rows[0]["export"][0], rows[1]["export"][0]
    assert first["latency_us_median"] == second["latency_us_median"] == 12.0
    assert (first["latency_us_median_alone"], second["latency_us_median_alone"]) == (10.6, 14.6)
    assert first["latency_timed_with"] == 2 and first["latency_runs"] == 300
    assert "latency_timed_with" not in rows[2]["export"][0]


def test_an_epoch_of_few_steps_is_warned_about():
    assert pipeline.few_steps_warning(4000, 128) is None  # 32 steps.
    line = pipeline.few_steps_warning(300, 128)  # 3 steps: students stay near chance.
    assert line.startswith("--batch_size=128: an epoch of the 300 training images is 3 step(s)")
    assert "try --batch_size=15 or less" in line
