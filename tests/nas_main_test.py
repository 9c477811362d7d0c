"""nas.main: the search smoke flagfile end to end, without its final step
(the final step runs through nas.main in nas_hand_test.py, on an npz, and in
process in nas_final_test.py)."""

import csv
import os
import subprocess
import sys

import pytest
from nas_helpers import HAVE_DATA, ROOT


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.slow(90)
def test_smoke_flagfile_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nas.main",
            "--flagfile=kd_keras/configs/nas_smoke.flags",
            f"--project_dir={tmp_path}",
            "--final_epochs=0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    project = os.path.join(tmp_path, "smoke")
    rows = list(csv.DictReader(open(os.path.join(project, "trials.csv"))))
    assert len(rows) >= 3 and all(r["status"] == "COMPLETED" for r in rows)
    assert any(r["hp.tuner/trial_id"] for r in rows)  # Hyperband promoted a trial.
    if any(r["feasible"] == "True" for r in rows):
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:  # A search where no trial met the budget says so and fails.
        assert proc.returncode != 0
        assert "No trial met the budget" in proc.stderr.strip().splitlines()[-1]
    assert "Non-dominated, accuracy vs int8 latency" in proc.stdout
    assert "Non-dominated, accuracy vs latency:" not in proc.stdout  # float32: not budgeted
    assert os.path.exists(os.path.join(project, "best_model.keras")) == any(
        r["feasible"] == "True" for r in rows
    )
    assert len(os.listdir(os.path.join(project, "teacher_cache"))) == 1
    assert not os.path.exists(os.path.join(project, "final"))  # --final_epochs=0
    assert "Final step" not in proc.stdout
    assert "--max_params=4000" in open(os.path.join(project, "flags.txt")).read()
