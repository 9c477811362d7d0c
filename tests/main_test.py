"""smoke.flags end to end through `python -m kd_keras.main`, and a rerun that reuses it."""

import json
import os
import subprocess
import sys

import pytest

from kd_keras import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CI sets KD_KERAS_REQUIRE_DATA=1 so that missing data fails instead of skipping.
HAVE_DATA = (not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
             or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1")


def _main(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "kd_keras.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_smoke_config_end_to_end_and_rerun_reuses(tmp_path):
    workdir = str(tmp_path / "work")
    proc = _main("--flagfile=kd_keras/configs/smoke.flags", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(os.path.join(workdir, "results.json")))
    rows = {r["name"]: r for r in results["models"]}
    assert set(rows) >= {"teacher0", "student-baseline", "student-kd"}
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["params"] > 0
        assert os.path.exists(os.path.join(row["run_dir"], "model.keras"))
        assert any("tfevents" in f for _, _, fs in os.walk(row["run_dir"]) for f in fs)
    assert rows["student-kd"]["kd"] and not rows["student-baseline"]["kd"]
    assert results["flags"]["limit_train"] == 512
    assert "| teacher0 |" in open(os.path.join(workdir, "results.md")).read()
    assert "--limit_train=512" in open(os.path.join(workdir, "flags.txt")).read()
    assert "student-kd" in proc.stdout  # the table is printed

    again = _main("--flagfile=kd_keras/configs/smoke.flags", f"--workdir={workdir}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Reusing finished run") >= 3
    rerun = json.load(open(os.path.join(workdir, "results.json")))
    assert [r["test_accuracy"] for r in rerun["models"]] == \
        [r["test_accuracy"] for r in results["models"]]


def test_invalid_flags_fail_before_training(tmp_path):
    proc = _main("--flagfile=kd_keras/configs/smoke.flags", f"--workdir={tmp_path}",
                 "--student_augment=rotate")
    assert proc.returncode != 0
    assert "allowed" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "runs"))
