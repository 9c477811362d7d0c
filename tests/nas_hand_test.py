"""nas.hand and the final step's hand students beyond the search space:
registry students at a width, own students (path or MODULE:FUNCTION), those
over the budget named and left out, the best student chosen on validation."""

import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from nas_helpers import CLASSES, MAX_PARAMS, ROOT, SHAPE, StubSearch, make_tuner, tiny_space

from export import convert as convert_lib
from kd_keras import compression, models
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras
from nas import final, hand, oracles, report
from nas import objective as objective_lib
from nas import space as search_space

BUILDERS = """
from kd_keras.keras_compat import keras

def tiny(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="block1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
"""


def write_builders(directory, module="nas_hand_builders"):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{module}.py"), "w") as f:
        f.write(BUILDERS)
    return f"{module}:tiny"


def stub_export(monkeypatch):
    """The final step's int8 export, TFLM arena and joint timing as arithmetic
    on the parameter count (a file of params + 1000 bytes)."""

    def export_model(model, directory, formats, data, name, **kwargs):
        os.makedirs(directory, exist_ok=True)
        n = model.count_params()
        path = os.path.join(directory, f"{name}.int8.tflite")
        with open(path, "wb") as f:
            f.write(b"\0" * (n + 1000))
        return [{"path": path, "file_bytes": n + 1000, "latency_us_median": n / 300.0}]

    def together(files, **kwargs):
        return {k: {"latency_us_median": os.path.getsize(p) / 300.0} for k, p in files.items()}

    monkeypatch.setattr(final, "export_model", export_model)
    monkeypatch.setattr(
        final.micro_lib, "micro", lambda content: {"arena_bytes": 1, "tflm_runs": 1}
    )
    monkeypatch.setattr(final.measure_lib, "latency_together", together)


def one_trial_search(tmp_path):
    """A finished one-trial stub search under --max_params=MAX_PARAMS: (search, its rows)."""
    search = make_tuner(
        tmp_path,
        oracles.make_oracle("random", max_trials=1, seed=3),
        StubSearch,
        space=tiny_space(filters=(4, 8, 16, 48)),
        budget=objective_lib.Budget(max_params=MAX_PARAMS),
    )
    search.search(verbose=0)
    rows = report.write_outputs(search)["rows"]
    return search, rows


@pytest.mark.slow(8)
def test_registry_and_own_hand_students_retrained_and_over_budget_ones_left_out(
    tmp_path, monkeypatch
):
    builder = write_builders(str(tmp_path / "mods"))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    stub_export(monkeypatch)
    search, rows = one_trial_search(tmp_path)
    items = ["ds_cnn:0.25", "resnet8:1", builder]
    lines = []
    result = final.run_final(
        search, rows, final_epochs=2, top=1, hand=items, latency_runs=5, report=lines.append
    )
    # resnet8 at width 1 has ~78k parameters: named in one line, left out.
    (line,) = lines
    assert "\n" not in line and "resnet8_1 (params 7" in line and "--max_params=4000" in line
    assert list(result["left_out"]) == ["resnet8_1"]
    got = {r["name"]: r for r in result["rows"]}
    assert "resnet8_1" not in got
    kinds = {n: r.get("kind") for n, r in got.items() if r["source"] == "hand"}
    assert kinds == {"ds_cnn_0.25": "registry", "nas_hand_builders.tiny": "own"}
    # Built for the search's input shape and classes, with the space's BN momentum.
    ds_cnn = models.build("ds_cnn", SHAPE, CLASSES, width=0.25)
    assert got["ds_cnn_0.25"]["params"] == ds_cnn.count_params()
    saved = keras.models.load_model(
        os.path.join(search.project_dir, "final", "ds_cnn_0.25", final.MODEL_FILE), compile=False
    )
    momenta = {l.momentum for l in saved.layers if isinstance(l, keras.layers.BatchNormalization)}
    assert momenta == {search_space.BN_MOMENTUM}
    for r in got.values():  # Proxy and full budget, trained as the found students are.
        if r["source"] == "hand":
            assert r["proxy_source"] == "trained from scratch" and r["final_epochs"] == 2
    # The best: the most accurate on validation within the budget, found or hand.
    within = [r for r in got.values() if r["feasible"]]
    best = got[result["best"]]
    assert best["feasible"] and best["val_accuracy"] == max(r["val_accuracy"] for r in within)
    best_file = result["paths"][final.BEST_MODEL]
    mine = os.path.join(search.project_dir, "final", best["name"], final.MODEL_FILE)
    assert open(best_file, "rb").read() == open(mine, "rb").read()
    text = open(result["paths"]["final.md"]).read()
    assert "| hand (registry) |" in text and "| hand (own) |" in text and "| search |" in text
    assert f"**{best['name']}** (best)" in text and "Left out, over the search's budget" in text
    # Resumed: nothing trained or measured again; the same students left out.
    fits = len(search.fits)
    monkeypatch.setattr(search, "budget_figures", None)  # Measuring again would fail.
    again = final.run_final(
        search, rows, final_epochs=2, top=1, hand=items, latency_runs=5, report=lines.append
    )
    assert len(search.fits) == fits and lines == [line, line]
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in result["rows"]]


@pytest.mark.slow(6)
def test_a_hand_student_over_the_budget_is_slimmed_into_it_when_asked(tmp_path, monkeypatch):
    stub_export(monkeypatch)
    search, rows = one_trial_search(tmp_path)
    items = ["resnet8:1"]
    budget = lambda m: search.budget_figures(m)[0]["params"]  # noqa: E731
    run = lambda: final.run_final(  # noqa: E731
        search, rows, final_epochs=2, top=1, hand=items, latency_runs=5, slim_epochs=1
    )
    result = run()
    assert result["left_out"] == {}
    got = {r["name"]: r for r in result["rows"]}
    slimmed = got["resnet8_1_slim"]
    full = models.build("resnet8", SHAPE, CLASSES, width=1.0)
    assert slimmed["params"] <= MAX_PARAMS < full.count_params()
    assert slimmed["feasible"] and slimmed["proxy_val_accuracy"] is None
    assert slimmed["slimmed"]["params_before"] == full.count_params()
    assert slimmed["slimmed"]["kept"] < slimmed["slimmed"]["channels"]
    assert slimmed["slim"]["criterion"] == "bn_gamma" and slimmed["slim"]["from"] == "resnet8_1"
    # The fewest channels removed: a slightly smaller fraction is over the budget.
    fraction = slimmed["slim"]["fraction"]
    looser = compression.slim_model(full, compression.plan_slim(full, fraction - 0.01))
    assert budget(looser) > MAX_PARAMS
    # Trained at full budget (2 epochs), then fine-tuned slimmed (1 epoch).
    assert [epochs for _, epochs, _ in search.fits[-2:]] == [2, 1]
    text = open(result["paths"]["final.md"]).read()
    assert "| hand (registry, slimmed) |" in text
    assert hand.pipeline_flags(slimmed) == (
        "--student=resnet8 --student_args=width=1,bn_momentum=0.9 --techniques=slim "
        f"--slim_fraction={math.ceil(fraction * 1e4) / 1e4:g} --slim_criterion=bn_gamma "
        "--compress_epochs=1 --compress_lr_scale=1"
    )
    # A budget below what one channel per group costs: left out, saying why.
    budget_before, search.budget = search.budget, objective_lib.Budget(max_params=50)
    entries = hand.entries(["ds_cnn:0.25"], search.hypermodel)
    kept, still = final.slim_into_budget(search, entries, {"ds_cnn_0.25": "params"}, tmp_path, 1)
    assert kept == [] and list(still) == ["ds_cnn_0.25"]
    assert still["ds_cnn_0.25"].startswith("params; slimming cannot reach it: the budget cannot")
    search.budget = budget_before
    fits = len(search.fits)
    monkeypatch.setattr(search, "budget_figures", None)  # Measuring again would fail.
    again = run()
    assert len(search.fits) == fits and again["left_out"] == {}
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in result["rows"]]


def test_the_best_student_is_chosen_on_validation_within_the_budget_and_may_be_hand():
    def row(name, source, val, test, feasible=True, kind=None):
        return dict(
            name=name,
            source=source,
            kind=kind,
            student=name.replace("_", ":", 1) if kind else None,
            val_accuracy=val,
            test_accuracy=test,
            feasible=feasible,
            int8_file_bytes=5000,
            int8_latency_us=10.0,
            proxy_val_accuracy=0.5,
            final_epochs=2,
            proxy_epochs=1,
        )

    rows = [
        row("trial_01", "search", 0.80, 0.95),  # Best on test: not what chooses.
        row("resnet8_0.5", "hand", 0.85, 0.70, kind="registry"),
        row("ds_cnn_1", "hand", 0.99, 0.99, feasible=False, kind="registry"),
    ]
    summary = final.summarize(rows)
    assert summary["best"] == "resnet8_0.5"
    text = report.final_markdown(dict(summary, rows=rows))
    assert "| **resnet8_0.5** (best) | hand (registry) |" in text
    assert "Best: resnet8_0.5 (hand (registry))" in text
    assert "trains it with --student=resnet8 --student_args=width=0.5,bn_momentum=0.9." in text
    assert final.summarize([dict(r, feasible=False) for r in rows])["best"] is None


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("mobilenet_v2", ["needs a width", "mobilenet_v2:WIDTH"]),
        ("resnet8:-1", ["'resnet8:-1' is not a hand student", "NAME:WIDTH", "resnet8"]),
        ("resnt:1", ["'resnt:1'", "FAMILY:WIDTH", "MODULE:FUNCTION", "path of a saved model"]),
        ("/nonexistent/student.keras", ["/nonexistent/student.keras", "does not exist"]),
        ("nas_hand_absent_module:build", ["cannot import module", "PYTHONPATH"]),
        ("cnn:0.75", ["cnn:0.75 is not a point of the search space", "stage1_filters=12"]),
    ],
)
def test_bad_hand_items_are_refused_naming_them_and_what_is_allowed(item, fragments):
    with pytest.raises(ValueError) as error:
        hand.entries([item], tiny_space())
    assert all(f in str(error.value) for f in fragments), str(error.value)
    assert "\n" not in str(error.value)


def test_a_hand_student_that_does_not_fit_the_data_is_refused_when_built(tmp_path, monkeypatch):
    path = str(tmp_path / "wrong.keras")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(CLASSES)(x)).save(path)
    with pytest.raises(ValueError, match=r"takes inputs of shape \(8, 8, 3\)"):
        hand.entries([path], tiny_space(), build=True)
    assert [e["kind"] for e in hand.entries([path], tiny_space())] == ["own"]  # Not built.
    # A feature distillation loss reads a student layer the student must have.
    with pytest.raises(ValueError, match="'ds_cnn:0.5' has no layer 'block9'"):
        hand.entries(["ds_cnn:0.5"], tiny_space(), build=True, layers=["block9"])
    assert hand.entries(["ds_cnn:0.5"], tiny_space(), build=True, layers=["block2"])


def write_npz(path, n=48):
    """MFCC-like frames (49 x 10 x 1 floats far outside [0, 1]), 3 classes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n), ("test", n // 2)):
        y = np.arange(count) % 3
        x = rng.normal(size=(count, 49, 10, 1)) * 20 + 10.0 * y.reshape(-1, 1, 1, 1)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.astype(np.float32), y.astype(np.int64)
    np.savez(path, **arrays)
    return str(path)


# nas.main in its own process (its flags cannot share one with kd_keras.main's),
# with training, candidate measurement and the final export stubbed.
SEARCH_CLI = r"""
import os, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import nas_hand_test, nas_helpers
from nas import main, search

class Stub:  # The monkeypatch fixture's one method, for a script.
    def setattr(self, owner, name, value):
        setattr(owner, name, value)

search.StudentSearch._fit = lambda self, model, *a, **k: {"history": {}, "train_time_s": 0.0}
for name in ("_measure", "_measure_int8", "_measure_float"):
    setattr(search.StudentSearch, name, getattr(nas_helpers.StubSearch, name))
nas_hand_test.stub_export(Stub())
main.app.run(main.main, argv=["nas.main"] + sys.argv[2:], flags_parser=main.parse_flags)
"""


@pytest.mark.slow(15)
def test_the_search_cli_runs_on_an_npz_with_registry_and_own_hand_students(tmp_path):
    npz = write_npz(tmp_path / "kws.npz")
    builder = write_builders(str(tmp_path / "mods"))
    args = [
        f"--dataset=npz:{npz}",
        "--val_size=12",
        f"--project_dir={tmp_path / 'nas'}",
        "--nodistill",
        "--max_trials=1",
        "--max_stages=2",
        "--max_blocks=1",
        "--filters=4,8",
        "--kernel_sizes=3",
        "--head_units=0",
        "--dropouts=0",
        "--student_epochs=1",
        "--student_warmup=0",
        "--batch_size=16",
        "--max_params=5000",
        "--final_epochs=1",
        "--final_top=1",
        f"--final_hand=ds_cnn:0.25,resnet8:1,{builder}",
        "--latency_runs=2",
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path / "mods")]))
    proc = subprocess.run(
        [sys.executable, "-c", SEARCH_CLI, ROOT] + args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    (line,) = [l for l in out.splitlines() if "left out:" in l]
    assert "resnet8_1 (params" in line and "--max_params=5000" in line
    final_json = report.runs.read_json(os.path.join(tmp_path, "nas", "nas", "final", "final.json"))
    names = {r["name"]: r for r in final_json["rows"]}
    assert {"ds_cnn_0.25", "nas_hand_builders.tiny"} <= set(names)
    assert (
        names["ds_cnn_0.25"]["params"]
        == models.build("ds_cnn", (49, 10, 1), 3, width=0.25).count_params()
    )
    assert "| hand (registry) |" in out and "Best student of the final step:" in out


def test_a_hand_student_the_converter_refuses_is_left_out_in_one_line(tmp_path):
    def refuse(model):
        raise convert_lib.ExportError("op HARD_SWISH is not supported\n  (long details)")

    search = types.SimpleNamespace(
        budget=objective_lib.Budget(max_params=MAX_PARAMS),
        budget_figures=refuse,
        train_config=train_lib.TrainConfig(epochs=1),
        hypermodel=tiny_space(),
    )
    entries = hand.entries(["ds_cnn:0.25"], search.hypermodel)
    left = final.hand_over_budget(search, entries, str(tmp_path))
    assert left == {"ds_cnn_0.25": "does not convert to int8: op HARD_SWISH is not supported"}
    assert "\n" not in final.left_out_line(left)
