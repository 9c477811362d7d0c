"""smoke.flags end to end through `python -m kd_keras.main` (the one real run of
this entry point in the suite; reuse on a rerun is tested in process, in
pipeline_test.py)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_dataset, tiny_pipeline_config

from kd_keras import console, runs
from kd_keras import data as data_lib
from kd_keras.app import pipeline, variants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CI sets KD_KERAS_REQUIRE_DATA=1 so that missing data fails instead of skipping.
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)


def _main(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    # TensorFlow's own log level decides whether its chatter exists at all;
    # the test checks where the default chatter goes (log.txt, not the screen).
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "kd_keras.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.slow(70)
def test_smoke_config_end_to_end(tmp_path):
    workdir = str(tmp_path / "work")
    proc = _main("--flagfile=kd_keras/configs/smoke.flags", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(os.path.join(workdir, "results.json")))
    rows = {r["name"]: r for r in results["models"]}
    assert set(rows) == {
        "teacher0",
        "none-nokd-s0",
        "none-kd-s0",
        "prune+qat-nokd-s0",
        "prune+qat-kd-s0",
    }
    for row in rows.values():
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["params"] > 0
        assert runs.saved_model_path(row["run_dir"]) is not None
        assert any("tfevents" in f for _, _, fs in os.walk(row["run_dir"]) for f in fs)
    assert rows["none-kd-s0"]["kd"] and not rows["none-nokd-s0"]["kd"]
    # The compressed variants: pruned to ~50% in the pruned layers, QAT, int8 export.
    for name in ("prune+qat-nokd-s0", "prune+qat-kd-s0"):
        row = rows[name]
        assert abs(row["sparsity"]["pruned_overall"] - 0.5) <= 0.01
        assert row["qat_layers"]
        formats = {e["format"]: e for e in row["export"]}
        # A QAT model exports as int8 only, and says which formats it skipped.
        assert set(formats) == {"int8"} and "float32" in formats["int8"]["formats_skipped"]
        assert "int8" in formats["int8"]["weight_dtypes"]
        assert formats["int8"]["arena_bytes"] > 0 and formats["int8"]["tflm_runs"]
    for row in rows.values():
        for e in row.get("export", []):
            assert e["file_bytes"] > 0 and e["latency_us_median"] > 0
            assert 0.0 <= e["accuracy"] <= 1.0
            # One clock: the run's 6 student files timed together at its end.
            assert e["latency_timed_with"] == 6 and e["latency_us_median_alone"] > 0
    assert results["flags"]["limit_train"] == 512
    report = open(os.path.join(workdir, "results.md")).read()
    assert "| teacher0 |" in report and "6 TFLite files per thread count timed" in report
    assert "--limit_train=512" in open(os.path.join(workdir, "flags.txt")).read()
    assert "| none-kd-s0 | none | True |" in proc.stdout  # the table is printed
    assert "KD gain (pts)" in proc.stdout
    # A quiet console: stage lines, epochs and results; the chatter is in log.txt.
    screen = proc.stdout + proc.stderr
    for word in ("cuInit", "fully_quantize", "HDF5", "WARNING:", "W0000", "E0000"):
        assert word not in screen, f"{word!r} on the console:\n{screen}"
    for line in (
        "[1/5] teacher0 (resnet)",
        "[4/5] student prune+qat, no KD",
        "[5/5] student prune+qat, KD",
        "  ... training prune+qat-kd-s0: 1 epoch(s)",
        "  ... exporting to TFLite: float32, int8",
    ):
        assert line in proc.stdout.splitlines(), proc.stdout
    log = open(os.path.join(workdir, console.LOG_NAME)).read()
    for word in ("cuInit", "fully_quantize", "HDF5"):
        assert word in log
    # A rerun reuses every finished run: pipeline_test.py, in process.


def test_teacher_export_rows(tmp_path):
    """--export_teacher exports the teacher too, one row per format and
    thread count (in process, on tiny data: the entry point's flags are
    covered by the smoke run above)."""
    data = tiny_dataset(64)
    config = tiny_pipeline_config(
        str(tmp_path),
        kd_mode="off",
        export_teacher=True,
        export=variants.ExportSettings(formats=("float32",), threads=(1, 2), latency_runs=5),
    )
    results = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    teacher = results["models"][0]
    assert teacher["role"] == "teacher"
    assert [(e["format"], e["threads"]) for e in teacher["export"]] == [
        ("float32", 1),
        ("float32", 2),
    ]
    assert all(e["file_bytes"] > 0 and e["latency_us_median"] > 0 for e in teacher["export"])
    assert "| teacher0 |" in open(os.path.join(str(tmp_path), "results.md")).read()
