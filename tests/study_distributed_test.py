"""The study distributed with keras-tuner's chief/worker mode equals the study
run in one process.

The tiny smoke study with trivial training (``conftest.trivial_fit_study``:
the scheduling, the run cache and the aggregation are real, a fit changes no
weight) runs once with a chief and two workers on 127.0.0.1 (a free port)
sharing one workdir, and once in a single process in another workdir; every
number of the report that the runs determine must be equal.
"""

import json
import os
import socket

import pytest
from conftest import trivial_fit_study

from kd_keras import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)
# The eight runs of two techniques x two seeds x KD on/off: without TFLite
# export (latency differs between processes), bagging or a second teacher.
FLAGS = ["--export_formats=", "--bagging_members=0", "--extra_teacher_args=", "--verbose=0"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _study(workdir, tuner_id=None, port=None):
    env = dict(os.environ)
    for key in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    if tuner_id:
        env.update(
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port),
        )
    # Each run sleeps a little, so that both workers get runs.
    return trivial_fit_study(workdir, *FLAGS, env=env, fit_seconds=0.5)


def _deterministic(results):
    """The numbers of results.json that training fixes (no timings, no paths)."""
    runs = {
        r["name"]: (r["test_accuracy"], r["weights_digest"], r["params"]) for r in results["runs"]
    }
    summary = {
        label: {k: e[k] for k in ("keras_accuracy", "kd_gain", "orthogonality_ratio")}
        for label, e in results["summary"].items()
    }
    return {
        "runs": runs,
        "summary": summary,
        "additivity": results["additivity"],
        "variance": results["variance"],
        "teacher": [r["test_accuracy"] for r in results["teacher"]],
    }


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.slow(60)
def test_chief_and_two_workers_give_the_single_process_report(tmp_path):
    shared, alone = str(tmp_path / "distributed"), str(tmp_path / "single")
    port = _free_port()
    procs = {t: _study(shared, t, port) for t in ("chief", "tuner0", "tuner1")}
    outs = {t: p.communicate(timeout=900) for t, p in procs.items()}
    for t, p in procs.items():
        assert p.returncode == 0, f"{t}:\n{outs[t][1][-3000:]}"
    assert "Study report written" in outs["chief"][0]
    for t in ("tuner0", "tuner1"):
        assert "no study runs left" in outs[t][0]
        assert "[study]" in outs[t][0]  # Both workers ran trials.

    single = _study(alone)
    out, err = single.communicate(timeout=900)
    assert single.returncode == 0, err[-3000:]

    got = json.load(open(os.path.join(shared, "results.json")))
    want = json.load(open(os.path.join(alone, "results.json")))
    assert _deterministic(got) == _deterministic(want)
    # Every run directory was trained once: one result, no corrupt copies.
    names = os.listdir(os.path.join(shared, "runs"))
    assert not [n for n in names if ".corrupt-" in n]
    assert sorted(n for n in names if not n.endswith(".lock")) == sorted(
        n for n in os.listdir(os.path.join(alone, "runs")) if not n.endswith(".lock")
    )
    # The markdown tables agree too (no timings or latencies without export).
    assert (
        open(os.path.join(shared, "report.md")).read()
        == open(os.path.join(alone, "report.md")).read()
    )
