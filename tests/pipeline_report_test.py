"""The pipeline report: KD gains pair each KD student with its plain twin."""

from kd_keras.app import report


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
