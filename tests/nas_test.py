"""nas: search space, budgeted search with KD, fronts, resumption, Hyperband, load_student."""

import csv
import dataclasses
import json
import logging
import os
import subprocess
import sys

import keras_tuner as kt
import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config

import nas
from export import convert as convert_lib
from kd_keras import data as data_lib
from kd_keras import distill, distribute, models
from kd_keras import train as train_lib
from kd_keras.app import pipeline
from kd_keras.keras_compat import keras
from nas import candidate, hardware, oracles, pareto, report, search
from nas import objective as objective_lib
from nas import space as search_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE, CLASSES = (12, 12, 1), 10
MAX_PARAMS = 4000
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)


def _space(**kw):
    """A small space with very thin (4) and wide (48) stages: both sides of MAX_PARAMS."""
    args = dict(
        max_stages=3,
        max_blocks=1,
        filters=(4, 48),
        kernel_sizes=(3,),
        expansions=(1, 2),
        head_units=(0,),
        dropouts=(0.0,),
    )
    args.update(kw)
    return search_space.StudentSpace(SHAPE, CLASSES, **args)


def _tuner(directory, oracle, cls=search.StudentSearch, **kw):
    args = dict(
        data=tiny_dataset(64, SHAPE, CLASSES),
        train_config=train_lib.TrainConfig(epochs=1),
        batch_size=32,
        budget=objective_lib.Budget(max_latency_us=1e7, max_params=MAX_PARAMS),
        measure=candidate.MeasureConfig(num_runs=5, warmup=1),
        directory=str(directory),
        project_name="p",
    )
    args.update(kw)
    return cls(_space(), oracle, **args)


# ----------------------------------------------------------------------------
# A real search (training with KD, TFLite export, LiteRT timing), shared.


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    directory = tmp_path_factory.mktemp("search")
    keras.utils.set_random_seed(0)
    teacher = models.build("cnn", SHAPE, CLASSES, width=0.25)
    search = _tuner(directory, oracles.make_oracle("random", max_trials=3, seed=3), teacher=teacher)
    search.search(verbose=0)
    return search, report.write_outputs(search)


@pytest.mark.slow(20)
def test_search_records_every_trial_and_applies_the_budget(searched):
    search, outputs = searched
    rows = outputs["rows"]
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    for r in rows:
        assert 0.0 <= r["val_accuracy"] <= 1.0 and r["latency_us"] > 0
        assert r["feasible"] == (r["params"] <= MAX_PARAMS)
        over = max(0.0, r["params"] / MAX_PARAMS - 1.0)
        assert r["over_params"] == pytest.approx(over)
        assert r["over_latency_us"] == 0.0  # A limit that is set but not binding.
        assert r["arena_bytes"] > 0  # TFLM's arena of the candidate's int8 file.
        expected = r["val_accuracy"] if r["feasible"] else r["val_accuracy"] - 1.0 - over
        assert r["score"] == pytest.approx(expected)
        assert (r["score"] >= 0) == r["feasible"]
        assert ("params+" in r["violations"]) == (not r["feasible"])
        trial_dir = os.path.join(search.project_dir, f"trial_{r['trial_id']}")
        assert os.path.getsize(os.path.join(trial_dir, "model.tflite")) == r["file_bytes"]
        saved = json.load(open(os.path.join(trial_dir, "result.json")))
        assert saved["kd"] is not None and "distillation_loss" in saved["history"]
    assert {r["feasible"] for r in rows} == {True, False}, "budget should split the trials"
    best = outputs["best"]
    feasible = [r for r in rows if r["feasible"]]
    assert best["feasible"] and best["val_accuracy"] == max(r["val_accuracy"] for r in feasible)
    hps = json.load(open(outputs["paths"]["best_hyperparameters.json"]))
    assert hps["trial_id"] == best["trial_id"] and hps["values"] == best["hyperparameters"]


def test_tables_plot_and_fronts_are_written(searched):
    _, outputs = searched
    rows, paths = outputs["rows"], outputs["paths"]
    table = list(csv.DictReader(open(paths["trials.csv"])))
    assert [t["trial_id"] for t in table] == [r["trial_id"] for r in rows]
    assert [t["feasible"] for t in table] == [str(r["feasible"]) for r in rows]
    assert all(t["hp.stages"] for t in table)
    assert len(json.load(open(paths["trials.json"]))["trials"]) == 3
    assert open(paths["accuracy_vs_latency.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved_fronts = json.load(open(paths["pareto.json"]))
    for name, (acc, cost) in pareto.FRONTS.items():
        front = outputs["fronts"][name]
        assert saved_fronts[name] == [r["trial_id"] for r in front]
        points = {r["trial_id"]: (r[acc], r[cost]) for r in rows}
        for r in rows:
            dominated = any(
                pareto.dominates(p, points[r["trial_id"]], (True, False)) for p in points.values()
            )
            assert (r in front) == (not dominated), (name, r["trial_id"])


def test_load_student_rebuilds_the_best_architecture_untrained(searched):
    search, outputs = searched
    trained = keras.models.load_model(outputs["paths"]["best_model.keras"], compile=False)
    fresh = nas.load_student(search.project_dir, SHAPE, CLASSES)
    assert [type(l).__name__ for l in fresh.layers] == [type(l).__name__ for l in trained.layers]
    assert [l.name for l in fresh.layers] == [l.name for l in trained.layers]
    assert fresh.count_params() == trained.count_params() == outputs["best"]["params"]
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained.get_weights()))
    train_lib.compile_plain(fresh)
    before = fresh.get_layer("logits").get_weights()[0].copy()
    x = np.random.default_rng(0).random((8,) + SHAPE, dtype=np.float32)
    loss = fresh.train_on_batch(x, np.arange(8) % CLASSES)[0]
    assert np.isfinite(loss)
    assert not np.array_equal(before, fresh.get_layer("logits").get_weights()[0])
    other = nas.load_student(
        os.path.join(search.project_dir, search_space.BEST_HPS_FILE), (16, 16, 3), 4
    )
    assert other.output_shape == (None, 4) and other.input_shape == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="best_hyperparameters.json"):
        nas.load_student(os.path.join(search.project_dir, "trial_0"), SHAPE, CLASSES)


# ----------------------------------------------------------------------------
# Orchestration, with training and measurement stubbed.


class StubSearch(search.StudentSearch):
    """Records run_trial calls; 'training' shifts the weights, 'measuring' is arithmetic."""

    interrupt_at = None  # Raise KeyboardInterrupt inside this call number (1-based).

    def run_trial(self, trial, *args, **kwargs):
        self.calls = getattr(self, "calls", []) + [trial.trial_id]
        self.values = dict(trial.hyperparameters.values)
        return super().run_trial(trial, *args, **kwargs)

    def _fit(self, model, train_config, trial_dir, until_epoch=None):
        if self.interrupt_at == len(self.calls):
            raise KeyboardInterrupt
        epochs = until_epoch or train_config.epochs
        self.fits = getattr(self, "fits", []) + [
            (self.values, epochs, [w.copy() for w in model.get_weights()])
        ]
        model.set_weights([w + 0.01 * len(self.calls) for w in model.get_weights()])
        return {"history": {}, "train_time_s": 0.0}

    def _measure(self, model, trial_dir):
        n = model.count_params()
        return {
            "latency_us": n / 100.0,
            "latency_us_p90": n / 90.0,
            "file_bytes": 4 * n,
            "gzip_bytes": 4 * n,
            "tflite_params": n,
            "macs": n,
            "int8_latency_us": n / 300.0,
            "int8_file_bytes": n + 1000,
        }

    def _measure_int8(self, model):
        figures = self._measure(model, None)
        return {k: v for k, v in figures.items() if k.startswith("int8_")}, None

    def _measure_float(self, model):
        figures = self._measure(model, None)
        return {k: v for k, v in figures.items() if not k.startswith("int8_")}


def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path):
    first = _tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    first.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        first.search(verbose=0)
    finished, interrupted = first.calls

    second = _tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    second.search(verbose=0)
    assert finished not in second.calls
    assert second.calls[0] == interrupted and len(second.calls) == 2

    third = _tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    third.search(verbose=0)
    assert getattr(third, "calls", []) == []
    rows = report.write_outputs(third)["rows"]
    assert sorted(r["trial_id"] for r in rows) == sorted([finished] + second.calls)
    assert all(r["status"] == "COMPLETED" for r in rows)


def test_hyperband_without_a_parent_state_warm_starts_from_its_weights(tmp_path):
    """The stub trains nothing, so no trial leaves a checkpoint to continue: a
    promoted trial falls back to the parent's weights and its remaining epochs."""
    oracle = oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2, seed=0)
    search = _tuner(tmp_path, oracle, StubSearch, train_config=train_lib.TrainConfig(epochs=2))
    search.search(verbose=0)
    assert len(search.fits) >= 3
    continued = 0
    for values, epochs, start_weights in search.fits:
        parent = values.get("tuner/trial_id")
        if parent is None:
            assert epochs == values["tuner/epochs"]
        else:
            continued += 1
            assert epochs == values["tuner/epochs"] - values["tuner/initial_epoch"]
            saved = search.load_model(search.oracle.get_trial(parent)).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(start_weights, saved))
    assert continued >= 1
    for row in report.write_outputs(search)["rows"]:
        assert row["epochs"] == row["hyperband"]["tuner/epochs"]


def _over_budget_trials(search):
    return [r for r in report.write_outputs(search)["rows"] if not r["feasible"]]


def test_sampling_within_the_budget_trains_only_candidates_that_fit(tmp_path):
    """The space's wide (48-filter) stages break MAX_PARAMS; drawn within the
    budget, no trial is over it. The same oracle seed without it trains some
    that are (so the first assertion can fail)."""
    plain = _tuner(
        tmp_path / "plain", oracles.make_oracle("random", max_trials=6, seed=2), StubSearch
    )
    plain.search(verbose=0)
    assert _over_budget_trials(plain), "the control search should meet over-budget draws"

    search = _tuner(
        tmp_path / "within", oracles.make_oracle("random", max_trials=6, seed=2), StubSearch
    )
    assert search.sample_within_budget()
    search.search(verbose=0)
    assert len(search.calls) == 6 and _over_budget_trials(search) == []
    assert search.oracle.rejected >= 1 and search.oracle.draws == 6 + search.oracle.rejected


def test_sampling_within_the_budget_under_hyperband_and_when_it_cannot(tmp_path):
    oracle = oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2, seed=0)
    search = _tuner(
        tmp_path / "hb", oracle, StubSearch, train_config=train_lib.TrainConfig(epochs=2)
    )
    assert search.sample_within_budget()
    search.search(verbose=0)
    assert search.oracle.draws >= 2 and _over_budget_trials(search) == []
    bayes = _tuner(tmp_path / "b", oracles.make_oracle("bayesian", max_trials=2), StubSearch)
    assert not bayes.sample_within_budget()  # It proposes its own points.
    unlimited = _tuner(
        tmp_path / "u",
        oracles.make_oracle("random", max_trials=2),
        StubSearch,
        budget=objective_lib.Budget(),
    )
    assert not unlimited.sample_within_budget()


def test_within_budget_measures_the_untrained_files(tmp_path, monkeypatch):
    """The real check converts and measures the untrained candidate: to
    float32 only when the budget limits the float32 file."""
    values = _random_points(_space(), 1, seed=0)[0]
    formats = []
    convert = convert_lib.convert

    def spy(model, fmt, **kwargs):
        formats.append(fmt)
        return convert(model, fmt, **kwargs)

    monkeypatch.setattr(convert_lib, "convert", spy)
    roomy = _tuner(tmp_path / "a", oracles.make_oracle("random", max_trials=1))
    assert roomy.within_budget(values)
    assert formats == ["int8", "float32"]  # _tuner's budget limits the float32 latency
    formats.clear()
    tight = _tuner(
        tmp_path / "b",
        oracles.make_oracle("random", max_trials=1),
        budget=objective_lib.Budget(max_bytes=500, max_arena_bytes=100, int8=True),
    )
    assert not tight.within_budget(values)
    assert formats == ["int8"]


def test_a_start_point_over_the_budget_is_named_when_it_is_refused(tmp_path, caplog):
    """A budget below a hand-designed start point says so when the point is
    drawn (before any trial trains), naming the figure and the flag."""
    start = [search_space.hand_point("cnn", 0.25), search_space.hand_point("cnn", 1.0)]
    oracle = oracles.make_oracle("evolution", max_trials=1, start_points=start)
    search = _tuner(tmp_path, oracle, StubSearch, budget=objective_lib.Budget(max_params=5000))
    assert search.within_budget(start[0])  # 1,758 parameters
    assert not any("over the budget" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING):
        assert not search.within_budget(start[1])  # 24k parameters
        assert not search.within_budget(dict(start[1], stage3_filters=48))  # not a start point
    (line,) = [r.getMessage() for r in caplog.records if "over the budget" in r.getMessage()]
    assert line.startswith("Start point 2 of 2 (--start_points)")
    model = search.hypermodel.build(search_space.hyperparameters_from_values(start[1]))
    assert f"params {model.count_params()} > --max_params=5000" in line


def test_bayesian_oracle_models_the_conditional_space(tmp_path):
    oracle = oracles.make_oracle("bayesian", max_trials=4, num_initial_points=2, seed=0)
    search = _tuner(tmp_path, oracle, StubSearch)
    search.search(verbose=0)
    rows = report.write_outputs(search)["rows"]
    # Trials 3 and 4 come from the Gaussian process fitted on conditional
    # hyperparameters and on negative (over-budget) scores.
    assert len(search.calls) == 4 and [r["status"] for r in rows] == ["COMPLETED"] * 4
    assert all(r["score"] is not None for r in rows)


# ----------------------------------------------------------------------------
# The search space.


def _random_points(space, count, seed):
    hp = kt.HyperParameters()
    space.build(hp)  # Registers every hyperparameter, conditional ones included.
    rng = np.random.default_rng(seed)
    return [
        {p.name: p.random_sample(int(rng.integers(1 << 30))) for p in hp.space}
        for _ in range(count)
    ]


def _check_structure(model, values):
    assert {type(l).__name__ for l in model.layers} <= set(search_space.ALLOWED_LAYERS)
    assert model.output_shape == (None, CLASSES) and model.layers[-1].name == "logits"
    for stage in range(1, values["stages"] + 1):
        assert model.get_layer(f"block{stage}")
    kinds = {type(l).__name__ for l in model.layers}
    assert ("DepthwiseConv2D" in kinds) == (values["conv"] != "standard")
    gated = values.get("se", 0) > 0 or values.get("activation") == "hard_swish"
    assert ("Multiply" in kinds) == gated
    if values["conv"] != "inverted":
        assert "Add" not in kinds
    # Each stage after the first halves the resolution once: by a pool or by
    # a stride-2 spatial convolution ('strided_first': only into stage 2;
    # 'strided_stem': the first convolution instead of into stage 2).
    later = values["stages"] - 1
    n_strided = {"strided": later, "strided_first": min(1, later), "strided_stem": 1}.get(
        values["downsample"], 0
    )
    pools = [
        n
        for n in (type(l).__name__ for l in model.layers)
        if n in ("MaxPooling2D", "AveragePooling2D")
    ]
    strided = [
        l
        for l in model.layers
        if type(l).__name__ in ("Conv2D", "DepthwiseConv2D") and tuple(l.strides) == (2, 2)
    ]
    assert len(strided) == n_strided and len(pools) == max(0, later - n_strided)
    assert set(pools) <= {
        "AveragePooling2D" if values["downsample"] == "avgpool" else "MaxPooling2D"
    }


def test_random_and_extreme_space_points_build_from_allowed_layers():
    space = search_space.StudentSpace(SHAPE, CLASSES)  # Default ranges, 4 stages on 12x12.
    widest = {
        "stages": 4,
        "conv": "separable",
        "expansion": 4,
        "kernel_size": 5,
        "downsample": "strided",
        "head_units": 128,
        "dropout": 0.25,
        **{f"stage{i}_{k}": v for i in range(1, 5) for k, v in (("filters", 64), ("blocks", 2))},
    }
    first = dict(widest, downsample="strided_first", conv="inverted", stage3_blocks=1)
    stem = dict(widest, downsample="strided_stem", stage1_blocks=1)
    for values in [widest, first, stem] + _random_points(space, 8, seed=0):
        _check_structure(space.build(search_space.hyperparameters_from_values(values)), values)


def test_each_downsampling_and_stem_padding_ends_the_stages_at_its_resolutions():
    space = search_space.StudentSpace(SHAPE, CLASSES, max_stages=3, stem_paddings=("same", "valid"))
    point = dict(search_space.hand_point("cnn", 0.5), stage2_blocks=2, stem_padding="same")
    # Each stage's output: 'strided_stem' halves the input in the first
    # convolution and not again into stage 2; a valid 3x3 first convolution
    # makes 12 pixels 10, which the later halvings start from.
    expected = {
        "maxpool": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "avgpool": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided_first": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided_stem": {"same": (6, 6, 3), "valid": (5, 5, 3)},
    }
    assert set(expected) == set(search_space.DOWNSAMPLING)
    params = space.build(search_space.hyperparameters_from_values(point)).count_params()
    for downsample, by_padding in expected.items():
        for stem_padding, sizes in by_padding.items():
            values = dict(point, downsample=downsample, stem_padding=stem_padding)
            model = space.build(search_space.hyperparameters_from_values(values))
            got = tuple(model.get_layer(f"block{i}").output.shape[1] for i in (1, 2, 3))
            assert got == sizes, values
            assert model.count_params() == params, values
            spatial = [
                l for l in model.layers if type(l).__name__ == "Conv2D" and l.kernel_size != (1, 1)
            ]
            assert [l.padding for l in spatial] == [stem_padding] + ["same"] * (len(spatial) - 1)


def test_a_valid_stem_that_leaves_too_few_pixels_is_refused():
    with pytest.raises(ValueError, match=r"stem_paddings=\['same', 'valid'\].*max_stages=4"):
        search_space.StudentSpace(
            (8, 8, 1), CLASSES, max_stages=4, kernel_sizes=(3,), stem_paddings=("same", "valid")
        )
    search_space.StudentSpace((8, 8, 1), CLASSES, max_stages=4, kernel_sizes=(3,))
    with pytest.raises(ValueError, match="stem_paddings must each be in"):
        search_space.StudentSpace(SHAPE, CLASSES, stem_paddings=("causal",))


def test_space_points_convert_to_tflite_and_match_keras():
    from export import convert, measure

    # Every layer kind (expansion, strided depthwise, maxpool, head, dropout) in
    # two small designed points, plus random points of a small space: a
    # conversion takes seconds per dozen layers.
    space = search_space.StudentSpace(SHAPE, CLASSES, max_stages=3, head_units=(0, 16))
    designed = [
        {
            "stages": 2,
            "conv": "separable",
            "expansion": 4,
            "kernel_size": 5,
            "downsample": "strided",
            "head_units": 16,
            "dropout": 0.25,
            "stage1_filters": 8,
            "stage1_blocks": 1,
            "stage2_filters": 16,
            "stage2_blocks": 2,
        },
        {
            "stages": 3,
            "conv": "standard",
            "kernel_size": 3,
            "downsample": "maxpool",
            "head_units": 0,
            "dropout": 0.0,
            "stage1_filters": 8,
            "stage1_blocks": 1,
            "stage2_filters": 8,
            "stage2_blocks": 1,
            "stage3_filters": 16,
            "stage3_blocks": 1,
        },
    ]
    small = search_space.StudentSpace(SHAPE, CLASSES, max_stages=2, max_blocks=1, filters=(8, 16))
    x = np.random.default_rng(0).random((2,) + SHAPE, dtype=np.float32)
    cases = [(space, v) for v in designed] + [(small, v) for v in _random_points(small, 2, 1)]
    for hypermodel, values in cases:
        model = hypermodel.build(search_space.hyperparameters_from_values(values))
        _check_structure(model, values)
        content = convert.convert(model, "float32")
        lite, _ = measure.predict(content, x)
        np.testing.assert_allclose(lite, model(x, training=False).numpy(), atol=1e-4)


def test_separable_point_is_accepted_by_tf_mot():
    import tensorflow_model_optimization as tfmot

    values = {
        "stages": 2,
        "conv": "separable",
        "expansion": 2,
        "kernel_size": 3,
        "downsample": "strided",
        "head_units": 16,
        "dropout": 0.1,
        "stage1_filters": 8,
        "stage1_blocks": 2,
        "stage2_filters": 16,
        "stage2_blocks": 1,
    }
    space = search_space.StudentSpace(SHAPE, CLASSES, head_units=(0, 16))
    model = space.build(search_space.hyperparameters_from_values(values))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert any("prune_low_magnitude" in l.name for l in pruned.layers)
    quantized = tfmot.quantization.keras.quantize_model(model)
    assert quantized.output_shape == (None, CLASSES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_stages=5), "max_stages"),  # 12x12 halves to 1 pixel after 4 stages.
        (dict(min_stages=3, max_stages=2), "min_stages"),
        (dict(conv_types=("standard", "fancy")), "conv_types"),
        (dict(kernel_sizes=(4,)), "kernel_sizes"),
        (dict(dropouts=(1.0,)), "dropouts"),
        (dict(filters=()), "filters"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_space_rejects_bad_arguments(kwargs, match):
    args = dict(input_shape=SHAPE, num_classes=CLASSES)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        search_space.StudentSpace(**args)


# ----------------------------------------------------------------------------
# Objective, budget, fronts, oracles.


def test_objective_puts_every_infeasible_trial_below_every_feasible_one():
    budget = objective_lib.Budget(max_latency_us=100, max_bytes=1000)
    excess = budget.excess({"latency_us": 150.0, "file_bytes": 500, "params": 10**9})
    assert excess == {"latency_us": pytest.approx(0.5), "file_bytes": 0.0}
    assert objective_lib.objective(0.9, excess) == pytest.approx(0.9 - 1.0 - 0.5)
    assert objective_lib.objective(0.3, {"file_bytes": 0.0}) == 0.3
    assert objective_lib.objective(0.0, {}) > objective_lib.objective(1.0, {"params": 1e-9})
    with pytest.raises(ValueError, match="max_bytes"):
        objective_lib.Budget(max_bytes=-1)
    with pytest.raises(ValueError, match="latency_us"):
        budget.excess({"file_bytes": 1})
    arena = objective_lib.Budget(max_arena_bytes=20000)
    assert arena.excess({"arena_bytes": 30000, "tflm_runs": 1.0}) == {
        "arena_bytes": pytest.approx(0.5)
    }
    # A model TFLM cannot run is out of any arena budget.
    assert arena.excess({"arena_bytes": 0, "tflm_runs": 0.0}) == {"arena_bytes": 1.0}


def test_non_dominated_keeps_exactly_the_front():
    points = [(0.9, 100), (0.8, 50), (0.85, 120), (0.9, 100), (0.7, 50)]
    assert pareto.non_dominated(points, (True, False)) == [0, 1, 3]
    rows = [
        {"trial_id": str(i), "val_accuracy": a, "latency_us": c} for i, (a, c) in enumerate(points)
    ] + [{"trial_id": "x", "val_accuracy": None}]
    assert [r["trial_id"] for r in pareto.front(rows)] == ["1", "0", "3"]
    with pytest.raises(ValueError, match="coordinates"):
        pareto.non_dominated([(1, 2, 3)], (True, False))


def test_oracles_and_distributed_role():
    assert isinstance(oracles.make_oracle("hyperband", epochs=3), kt.oracles.HyperbandOracle)
    assert isinstance(
        oracles.make_oracle("bayesian", max_trials=4), kt.oracles.BayesianOptimizationOracle
    )
    with pytest.raises(ValueError, match="allowed"):
        oracles.make_oracle("grid")
    assert distribute.distributed_role({}) == "single"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distribute.distributed_role(dict(env, KERASTUNER_TUNER_ID="chief")) == "chief"
    assert distribute.distributed_role(dict(env, KERASTUNER_TUNER_ID="worker1")) == "worker"


# ----------------------------------------------------------------------------
# The entry point.


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
    final_rows = json.load(open(os.path.join(project, "final", "final.json")))["rows"]
    assert final_rows[-1]["name"] == "cnn_0.25" and final_rows[-1]["final_epochs"] == 1
    assert "Final step (full budget, int8)" in proc.stdout
    assert "--max_params=4000" in open(os.path.join(project, "flags.txt")).read()


def test_short_training_evaluates_in_inference_mode():
    """A trial trains a few dozen steps; BatchNorm's moving statistics must keep
    up, or every candidate scores near chance in inference mode (validation)."""
    space = _space(filters=(16,))
    keras.utils.set_random_seed(0)
    model = space.build(kt.HyperParameters())
    rng = np.random.default_rng(0)
    x = rng.random((1024,) + SHAPE).astype("float32")
    y = (x.mean((1, 2, 3)) > 0.5).astype("int64")
    train_lib.compile_plain(model, keras.optimizers.Adam(3e-3))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)  # 64 steps
    train_mode = np.mean(model(x, training=True).numpy().argmax(-1) == y)
    inference = np.mean(model(x, training=False).numpy().argmax(-1) == y)
    # Measured: 0.72 / 0.88 with momentum 0.9; 0.72 / 0.49 (chance) with 0.99.
    assert inference >= train_mode - 0.05, (train_mode, inference)


def test_the_pipeline_trains_a_searched_student_by_nas_path(searched, tmp_path):
    _, outputs = searched
    project = os.path.dirname(outputs["paths"]["best_hyperparameters.json"])
    config = tiny_pipeline_config(
        str(tmp_path / "work"), student="nas:" + project, student_kwargs={}, kd_mode="both"
    )
    data = tiny_dataset(64)  # 28x28x1: the architecture is rebuilt for the data.
    results = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    students = [r for r in results["models"] if r["role"] == "student"]
    expected = search_space.load_student(project, (28, 28, 1), 10).count_params()
    assert [r["kd"] for r in students] == [False, True]
    assert all(r["params"] == expected for r in students)
    with pytest.raises(ValueError, match="--student=nas:/nonexistent"):
        pipeline.validate(dataclasses.replace(config, student="nas:/nonexistent"))


# ----------------------------------------------------------------------------
# Multi-fidelity continuation, KD through the teacher cache, int8 figures.

POINT = {
    "stages": 2,
    "conv": "inverted",
    "expansion": 2,
    "kernel_size": 3,
    "downsample": "maxpool",
    "se": 0,
    "activation": "relu",
    "head_units": 0,
    "dropout": 0.0,
    "stage1_filters": 4,
    "stage1_blocks": 1,
    "stage2_filters": 4,
    "stage2_blocks": 1,
}


def _run(search, name, **hyperband):
    from keras_tuner.engine import trial as trial_lib

    values = dict(POINT, **{f"tuner/{k}": v for k, v in hyperband.items()})
    trial = trial_lib.Trial(search_space.hyperparameters_from_values(values), trial_id=name)
    return search.run_trial(trial)


@pytest.mark.slow(20)
def test_promoted_trial_continues_its_parent_like_one_uninterrupted_run(tmp_path):
    """Hyperband promotion with distillation through the teacher cache (augmented
    students): trial b continues trial a (1 -> 2 epochs of a 2-epoch schedule) and
    ends with the weights of trial c, trained 2 epochs in one go."""
    keras.utils.set_random_seed(0)
    teacher = models.build("cnn", SHAPE, CLASSES, width=0.25)
    search = _tuner(
        tmp_path,
        oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2),
        train_config=train_lib.TrainConfig(epochs=2, learning_rate=1e-2),
        augment=data_lib.AugmentConfig(crop_padding=1, flip=True),
        teacher=teacher,
        kd=distill.KDConfig(teacher_cache_views=2),
    )
    first = _run(search, "a", epochs=1, initial_epoch=0)
    progress = train_lib.read_progress(search.get_trial_dir("a"))
    assert progress["epochs_done"] == 1 and progress["finished"] is False
    assert first["epochs"] == 1
    promoted = _run(search, "b", epochs=2, initial_epoch=1, trial_id="a")
    whole = _run(search, "c", epochs=2, initial_epoch=0)
    assert promoted["epochs"] == whole["epochs"] == 2
    continued = search.load_model(_T("b"))
    direct = search.load_model(_T("c"))
    for x, y in zip(continued.get_weights(), direct.get_weights()):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)
    assert promoted["val_accuracy"] == pytest.approx(whole["val_accuracy"])
    history = json.load(open(os.path.join(search.get_trial_dir("b"), "result.json")))["history"]
    assert len(history["distillation_loss"]) == 2  # The parent's epoch, then its own.
    # One teacher cache for the whole search (teacher logits computed once).
    cached = os.listdir(search.teacher_cache_dir)
    assert len([f for f in cached if f.endswith(".npz")]) == 1, cached
    # int8 figures of every trial, and the int8 budget reads them.
    for m in (first, promoted, whole):
        assert 0 < m["int8_file_bytes"] != m["file_bytes"] and m["int8_latency_us"] > 0
    figures = {
        "int8_latency_us": 10.0,
        "latency_us": 1000.0,
        "int8_file_bytes": 5,
        "file_bytes": 50,
    }
    assert objective_lib.Budget(max_latency_us=20, max_bytes=10, int8=True).excess(figures) == {
        "latency_us": 0.0,
        "file_bytes": 0.0,
    }
    assert objective_lib.Budget(max_latency_us=20).excess(figures)["latency_us"] > 0


class _T:
    """The bit of a keras-tuner Trial that StudentSearch.load_model reads."""

    def __init__(self, trial_id):
        self.trial_id = trial_id


# ----------------------------------------------------------------------------
# The extended space: hand-designed points, every option on TFLM, old files.

HAND_FILTERS = (4, 8, 12, 16, 24, 32, 48, 64)


def _weights_structure(model):
    return [
        (type(l).__name__, [tuple(w.shape) for w in l.weights]) for l in model.layers if l.weights
    ]


@pytest.mark.parametrize("family", ["cnn", "cnn_dws"])
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0])
def test_hand_designed_students_are_points_of_the_space(family, width):
    space = search_space.StudentSpace(
        (28, 28, 1), 10, max_stages=3, max_blocks=1, filters=HAND_FILTERS, expansions=(1, 2)
    )
    values = search_space.hand_point(family, width)
    space.check_point(values)
    built = space.build(search_space.hyperparameters_from_values(values))
    registry = models.build(family, (28, 28, 1), 10, width=width)
    assert built.count_params() == registry.count_params()
    assert _weights_structure(built) == _weights_structure(registry)
    assert built.output_shape == registry.output_shape


def test_check_point_names_what_the_space_lacks():
    space = search_space.StudentSpace((28, 28, 1), 10, max_stages=3, filters=(4, 8, 16, 32, 64))
    space.check_point(search_space.hand_point("cnn", 0.5))
    with pytest.raises(ValueError, match=r"stage1_filters=12 .*allowed: \[4, 8, 16, 32, 64\]"):
        space.check_point(search_space.hand_point("cnn", 0.75))
    with pytest.raises(ValueError, match="conv='separable'"):
        search_space.StudentSpace((28, 28, 1), 10, conv_types=("standard",)).check_point(
            search_space.hand_point("cnn_dws", 0.5)
        )
    with pytest.raises(ValueError, match="FAMILY:WIDTH"):
        search_space.parse_hand_points(["resnet:1"])


def test_start_points_extend_the_hand_family_by_stages_of_the_last_width():
    space = search_space.StudentSpace(
        (28, 28, 1), 10, max_stages=4, max_blocks=1, filters=HAND_FILTERS, expansions=(1, 2)
    )
    (name, values), (plain, three) = search_space.start_points(["cnn:0.5:4", "cnn_dws:1"], space)
    assert name == "cnn_0.5_4stages" and values["stages"] == 4
    assert [values[f"stage{i}_filters"] for i in range(1, 5)] == [8, 16, 32, 32]
    assert (plain, three) == ("cnn_dws_1", search_space.hand_point("cnn_dws", 1.0))
    built = space.build(search_space.hyperparameters_from_values(values))
    convs = [l for l in built.layers if isinstance(l, keras.layers.Conv2D)]
    assert [tuple(l.kernel.shape) for l in convs] == [
        (3, 3, 1, 8),
        (3, 3, 8, 16),
        (3, 3, 16, 32),
        (3, 3, 32, 32),
    ]
    # Three stages of the same width are the registry model itself.
    assert search_space.hand_point("cnn", 0.5, stages=3) == search_space.hand_point("cnn", 0.5)
    for bad in ("cnn:0.5:0", "cnn:0.5:four", "resnet:1:4", "cnn:0.5:4:1"):
        with pytest.raises(ValueError, match="FAMILY:WIDTH\\[:STAGES\\]"):
            search_space.start_points([bad], space)
    with pytest.raises(ValueError, match="cnn:0.5:5 is not a point.*stages=5"):
        search_space.start_points(["cnn:0.5:5"], space)
    # A seed can carry changes, as a screen's --points item does.
    changed = "cnn:0.5:4/stage1_filters=4/kernel_size=5"
    assert search_space.start_points([changed, "cnn:0.5:4"], space) == [
        search_space.changed_point(changed, space),
        (name, values),
    ]
    assert search_space.start_points([changed], space)[0][1] == dict(
        values, stage1_filters=4, kernel_size=5
    )
    with pytest.raises(ValueError, match="stage1_filters=5 is not in the search space"):
        search_space.start_points(["cnn:0.5:4/stage1_filters=5"], space)


def test_changed_points_are_hand_points_with_settings_changed_and_checked():
    space = search_space.StudentSpace((28, 28, 1), 10, filters=HAND_FILTERS)
    name, values = search_space.changed_point(
        "cnn:0.25/downsample=strided_stem/stage1_filters=8/dropout=0.1", space
    )
    assert name == "cnn_0.25+downsample-strided_stem+stage1_filters-8+dropout-0.1"
    assert values == dict(
        search_space.hand_point("cnn", 0.25),
        downsample="strided_stem",
        stage1_filters=8,
        dropout=0.1,
    )
    assert (
        search_space.changed_point("cnn:0.5:4", space)
        == search_space.start_points(["cnn:0.5:4"], space)[0]
    )
    with pytest.raises(ValueError, match="'stage1_filters' is not NAME=VALUE"):
        search_space.changed_point("cnn:0.25/stage1_filters", space)
    with pytest.raises(ValueError, match="stage1_filters=5 is not in the search space"):
        search_space.changed_point("cnn:0.25/stage1_filters=5", space)
    # A name the space lacks, or one the point does not use, would build the
    # unchanged network under a changed name.
    with pytest.raises(ValueError, match="'stage1_filterz' is not a hyperparameter.*stages"):
        search_space.changed_point("cnn:0.25/stage1_filterz=8", space)
    with pytest.raises(ValueError, match="'stem_padding' is not a hyperparameter"):
        search_space.changed_point("cnn:0.25/stem_padding=valid", space)  # not searched here
    with pytest.raises(ValueError, match="expansion has no effect.*conv in \\['separable'"):
        search_space.changed_point("cnn:0.25/expansion=2", space)
    four = search_space.StudentSpace((28, 28, 1), 10, filters=HAND_FILTERS, max_stages=4)
    with pytest.raises(ValueError, match="stage4_filters has no effect.*stages in \\[4\\]"):
        search_space.changed_point("cnn:0.25/stage4_filters=8", four)
    assert search_space.changed_point("cnn:0.25:4/stage4_filters=8", four)[1]["stage4_filters"] == 8
    narrow = search_space.StudentSpace(
        (28, 28, 1), 10, filters=HAND_FILTERS, downsampling=("maxpool",)
    )
    with pytest.raises(ValueError, match="downsample='strided_stem'.*allowed: \\['maxpool'\\]"):
        search_space.changed_point("cnn:0.25/downsample=strided_stem", narrow)


@pytest.mark.slow(20)
def test_every_option_converts_to_int8_and_runs_on_tflm():
    from export import convert, measure, micro

    space = search_space.StudentSpace(
        SHAPE, CLASSES, max_stages=3, head_units=(0, 16), stem_paddings=("same", "valid")
    )
    images = np.random.default_rng(0).integers(0, 256, (16,) + SHAPE).astype(np.uint8)
    x = data_lib.preprocess(images[:2])
    for downsample, activation, stem_padding in (
        ("avgpool", "hard_swish", "same"),
        ("strided", "relu6", "valid"),
        ("strided_first", "relu", "same"),
        ("strided_stem", "relu", "valid"),
    ):
        values = dict(
            POINT,
            stem_padding=stem_padding,
            stages=3,
            stage2_blocks=2,
            stage3_filters=8,
            stage3_blocks=1,
            se=4,
            activation=activation,
            downsample=downsample,
            head_units=16,
            dropout=0.1,
        )
        model = space.build(search_space.hyperparameters_from_values(values))
        kinds = {type(l).__name__ for l in model.layers}
        assert kinds <= set(search_space.ALLOWED_LAYERS)
        assert {"Add", "Multiply", "DepthwiseConv2D"} <= kinds  # residual, SE, inverted
        int8 = convert.convert(model, "int8", representative_images=images)
        ops = measure.model_stats(int8)["ops"]
        assert {"ADD", "MUL", "MEAN", "LOGISTIC", "DEPTHWISE_CONV_2D"} <= set(ops), ops
        tflm = micro.micro(int8)
        assert tflm["tflm_runs"] and tflm["arena_bytes"] > 0, tflm
        lite, _ = measure.predict(convert.convert(model, "float32"), x)
        np.testing.assert_allclose(lite, model(x, training=False).numpy(), atol=1e-4)


def test_options_tf_mot_refuses_are_the_documented_ones():
    import tensorflow_model_optimization as tfmot

    space = search_space.StudentSpace(SHAPE, CLASSES)

    def accepts(fn, **kw):
        try:
            fn(space.build(search_space.hyperparameters_from_values(dict(POINT, **kw))))
        except (RuntimeError, ValueError):
            return False
        return True

    qat, prune = tfmot.quantization.keras.quantize_model, tfmot.sparsity.keras.prune_low_magnitude
    assert accepts(qat, activation="relu6") and accepts(prune, se=4)
    assert not accepts(qat, se=4) and not accepts(qat, activation="hard_swish")
    assert not accepts(prune, activation="hard_swish")


def test_a_space_saved_before_se_activations_and_stem_paddings_rebuilds_old_points():
    new = search_space.StudentSpace(SHAPE, CLASSES, stem_paddings=("same", "valid"))
    old_config = new.get_config()
    del old_config["se_ratios"], old_config["activations"], old_config["stem_paddings"]
    space = search_space.StudentSpace.from_config(old_config, SHAPE, CLASSES)
    assert space.stem_paddings == ("same",)
    old_values = {k: v for k, v in POINT.items() if k not in ("se", "activation", "stem_padding")}
    model = space.build(
        search_space.hyperparameters_from_values(dict(old_values, conv="separable"))
    )
    kinds = {type(l).__name__ for l in model.layers}
    assert "Multiply" not in kinds and "Rescaling" not in kinds
    assert all(l.max_value is None for l in model.layers if type(l).__name__ == "ReLU")
    assert model.get_layer("s1b1_conv").padding == "same"


# ----------------------------------------------------------------------------
# Rank correlation and the final step.


def test_spearman_with_ties_matches_a_hand_computation():
    # ranks x = [1, 2.5, 2.5, 4], ranks y = [1, 3, 2, 4]; deviations from 2.5:
    # sxy = 2.25 + 0 + 0 + 2.25 = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5).
    assert report.average_ranks([1, 2, 2, 3]) == [1.0, 2.5, 2.5, 4.0]
    assert report.spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(4.5 / 22.5**0.5)
    assert report.spearman([1, 2, 3], [5, 9, 100]) == pytest.approx(1.0)
    assert report.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(report.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal length"):
        report.spearman([1, 2], [1])
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 12).tolist(), rng.integers(0, 5, 12).tolist()
    assert report.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic)


@pytest.mark.parametrize(
    "limits, labelled",
    [
        # Within a decade (latencies of 11-19 us): every tick plainly labelled.
        ((10.7, 18.9), {"11", "12", "15", "18"}),
        # Within a decade but wider (bytes of 6-31 KB): not 7000 8000 9000.
        ((6_000, 31_000), {"10000", "20000", "30000"}),
        # Across decades (bytes of 6 KB to 300 KB): the majors only.
        ((6_000, 300_000), {"10000", "100000"}),
    ],
)
def test_final_plot_labels_log_axes_with_plain_numbers(limits, labelled):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(limits, [0, 1])
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    report.plain_log_ticks(ax.xaxis)
    fig.canvas.draw()
    ticks = ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
    texts = {t.get_text() for t in ticks if limits[0] <= t.get_position()[0] <= limits[1]}
    plt.close(fig)
    texts.discard("")
    assert labelled <= texts
    assert not any("times" in t or "^" in t for t in texts), texts
    if limits[1] > 10 * limits[0]:
        assert all(t.rstrip("0") == "1" for t in texts), texts
    if limits[1] > 2.5 * limits[0]:
        assert not texts & {"7000", "8000", "9000"}, texts


@pytest.mark.slow(20)
def test_final_step_retrains_the_pareto_set_and_hand_points(tmp_path):
    from nas import final

    space = _space(filters=(4, 8, 16, 32, 48), expansions=(1, 2))
    search = StubSearch(
        space,
        oracles.make_oracle("random", max_trials=3, seed=3),
        data=tiny_dataset(64, SHAPE, CLASSES),
        train_config=train_lib.TrainConfig(epochs=1),
        batch_size=32,
        budget=objective_lib.Budget(max_params=MAX_PARAMS),
        measure=candidate.MeasureConfig(num_runs=5, warmup=1),
        directory=str(tmp_path),
        project_name="p",
    )
    search.search(verbose=0)
    rows = report.write_outputs(search)["rows"]
    chosen = final.select(rows, top=2)
    archs = report.architectures(rows)
    assert chosen and all(r["feasible"] for r in chosen) and len(chosen) <= 2
    assert all(r in archs for r in chosen)
    calls = len(search.fits)
    hand = ["cnn:0.25", "cnn_dws:0.5"]
    result = final.run_final(search, rows, final_epochs=2, top=2, hand=hand, latency_runs=20)
    got = result["rows"]
    assert [r["source"] for r in got] == ["search"] * len(chosen) + ["hand", "hand"]
    assert [r["name"] for r in got[-2:]] == ["cnn_0.25", "cnn_dws_0.5"]
    # Found: proxy read from its trial; hand: trained with the trial protocol. Then
    # every one retrained at full budget (2 epochs).
    assert search.fits[calls:][-1][1] == 2
    assert len(search.fits) - calls == 2 + len(got)
    for r in got:
        assert r["proxy_source"].startswith("trial" if r["source"] == "search" else "trained")
        assert os.path.getsize(r["tflite"]) == r["int8_file_bytes"]
        assert r["arena_bytes"] > 0 and r["int8_latency_us"] > 0 and r["tflm_runs"]
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["int8_test_accuracy"] <= 1.0
        assert r["feasible"] == (r["params"] <= MAX_PARAMS)
    cnn = models.build("cnn", SHAPE, CLASSES, width=0.25).count_params()
    assert got[-2]["params"] == cnn
    assert result["spearman_all"] == pytest.approx(
        report.spearman([r["proxy_val_accuracy"] for r in got], [r["test_accuracy"] for r in got])
    ) or np.isnan(result["spearman_all"])
    for name, (acc, cost) in final.FINAL_FRONTS.items():
        expected = [
            h["name"]
            for h in got[-2:]
            if any(
                pareto.dominates((f[acc], f[cost]), (h[acc], h[cost]), (True, False))
                for f in got[:-2]
            )
        ]
        assert result["dominated"][name] == expected
    paths = result["paths"]
    assert open(paths["final_fronts.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(paths["final.md"]).read()
    assert "cnn_dws_0.5" in text and "Spearman(proxy, test accuracy), all retrained" in text
    # Resumed: nothing is trained or measured twice. The stored file paths are
    # as the first process named them (here: from another working directory);
    # the resumed step finds each file in its own run directory.
    for r in got:
        row_file = os.path.join(os.path.dirname(os.path.dirname(r["tflite"])), final.ROW_FILE)
        saved = json.load(open(row_file))
        stored = os.path.join("elsewhere", r["name"], "export", os.path.basename(r["tflite"]))
        saved["tflite"] = stored
        json.dump(saved, open(row_file, "w"))
    again = final.run_final(search, rows, final_epochs=2, top=2, hand=hand, latency_runs=20)
    assert len(search.fits) - calls == 2 + len(got)
    assert [r["test_accuracy"] for r in again["rows"]] == [r["test_accuracy"] for r in got]
    assert [r["tflite"] for r in again["rows"]] == [r["tflite"] for r in got]


def _final_row(name, source, acc, nbytes, latency, proxy=0.5):
    return dict(
        name=name,
        source=source,
        test_accuracy=acc,
        int8_file_bytes=nbytes,
        int8_latency_us=latency,
        proxy_val_accuracy=proxy,
    )


def test_final_summary_needs_one_found_student_cheaper_and_as_accurate_on_both_costs():
    from nas import final

    hand = [
        _final_row("cnn_0.25", "hand", 0.85, 8000, 6.0),
        _final_row("cnn_1", "hand", 0.91, 30000, 17.0),
    ]
    # a beats cnn_0.25 on latency only, b on bytes only: together they dominate
    # it on each plane, but no single one covers it on both costs.
    a = _final_row("a", "search", 0.86, 9000, 5.0)
    b = _final_row("b", "search", 0.86, 7000, 7.0)
    big = _final_row("big", "search", 0.918, 29000, 16.0)
    s = final.summarize(hand + [a, b, big])
    assert s["dominated"]["accuracy_vs_int8_latency"] == ["cnn_0.25", "cnn_1"]
    assert s["dominated"]["accuracy_vs_int8_bytes"] == ["cnn_0.25", "cnn_1"]
    assert s["covered"] == {"cnn_0.25": None, "cnn_1": "big"}
    assert not s["beats_hand"]
    lead, over = s["margins"]["big"]
    assert over == "cnn_0.25" and lead == pytest.approx(0.068)
    assert s["margins"]["a"] == (None, None)
    # A found student covering cnn_0.25 on both costs: every hand point is covered
    # and big leads the hand points it costs no less than by >= 0.5 pt.
    c = _final_row("c", "search", 0.85, 8000, 6.0)
    s = final.summarize(hand + [a, b, big, c])
    assert s["covered"] == {"cnn_0.25": "c", "cnn_1": "big"} and s["beats_hand"]
    # ... but not when the lead over the hand point it costs as much as is 0.4 pt.
    big2 = _final_row("big", "search", 0.914, 30000, 17.0)
    s = final.summarize(hand + [c, big2])
    assert s["margins"]["big"][1] == "cnn_1" and not s["beats_hand"]
    text = report.final_markdown(
        dict(s, rows=[dict(r, final_epochs=2, proxy_epochs=1) for r in hand + [c, big2]])
    )
    assert "- cnn_0.25: c" in text and ": not met." in text
    # A same-cost copy of a hand point (e.g. it with relu6) covers and is
    # counted by the rule, but named, and the covers without copies beside it.
    copy = dict(c, copy_of="trial_08")
    sc = final.summarize(hand + [a, b, big, copy])
    assert sc["covered"] == {"cnn_0.25": "c", "cnn_1": "big"} and sc["beats_hand"]
    assert sc["covered_without_copies"] == {"cnn_0.25": None, "cnn_1": "big"}
    assert sc["n_copies"] == 1
    copied = report.final_markdown(
        dict(sc, rows=[dict(r, final_epochs=2, proxy_epochs=1) for r in hand + [a, b, big, copy]])
    )
    assert "- cnn_0.25: c (a same-cost copy of trial_08; without copies: none)" in copied
    assert "| c | search (copy of trial_08) |" in copied
    assert "hand point (c of trial_08): 1 of 2." in copied
    assert "| c | search (seed point) |" in text and "| big | search |" in text


def test_final_select_spreads_along_the_front_from_most_accurate_to_cheapest(monkeypatch):
    from nas import final

    # Ten architectures on the front: accuracy rises with cost.
    archs = [
        dict(trial_id=f"{i:02d}", val_accuracy=0.5 + i / 100, feasible=True) for i in range(10)
    ]
    monkeypatch.setattr(report, "architectures", lambda rows: archs)
    monkeypatch.setattr(pareto, "fronts", lambda rows, fronts: {"f": archs})
    ids = [r["trial_id"] for r in final.select([], top=4)]
    assert ids == ["09", "06", "03", "00"]  # most accurate ... cheapest
    assert [r["trial_id"] for r in final.select([], top=1)] == ["09"]
    assert len(final.select([], top=20)) == 10


def test_final_select_takes_a_challenger_for_every_tried_hand_point_first(monkeypatch):
    from nas import final

    def row(tid, acc, nbytes, us, feasible=True):
        return dict(
            trial_id=tid,
            val_accuracy=acc,
            int8_file_bytes=nbytes,
            int8_latency_us=us,
            feasible=feasible,
            status="COMPLETED",
        )

    # A front of six (accuracy rises with both costs) and two dominated rows.
    front = [row(f"0{i}", 0.80 + i / 100, 1000 * (i + 1), 10.0 + i) for i in range(6)]
    cheap_better = row("10", 0.815, 1500, 10.5)  # off the byte front (01 is cheaper)
    archs = front + [cheap_better]
    monkeypatch.setattr(report, "architectures", lambda rows: archs)
    monkeypatch.setattr(pareto, "fronts", lambda rows, fronts: {"f": front})
    hand = [
        row("h0", 0.83, 1600, 10.6),  # costs no less than 00 and 10: 10 is more accurate
        row("h1", 0.90, 4000, 13.0),  # 00 .. 03 cost no more: 03 is the most accurate
        row("h2", 0.50, 500, 9.0),  # cheaper than every found row: no challenger
        row("h3", 0.99, 9000, 99.0, feasible=False),  # over budget: no target
    ]
    ids = [r["trial_id"] for r in final.select([], top=4, hand_rows=hand)]
    # Challengers 10 and 03, then a spread of two over the rest of the front.
    assert sorted(ids) == ["00", "03", "05", "10"]
    assert ids == ["05", "03", "10", "00"]  # most accurate proxy first
    # Challengers come first when `top` is small; none is taken twice.
    assert sorted(r["trial_id"] for r in final.select([], top=2, hand_rows=hand)) == ["03", "10"]
    assert [r["trial_id"] for r in final.select([], top=1, hand_rows=hand + hand)] == ["10"]
    # Without hand rows, the spread alone (the old behaviour).
    assert [r["trial_id"] for r in final.select([], top=3)] == ["05", "03", "00"]


class ScoredStub(StubSearch):
    """StubSearch whose score is a known function of the architecture: wider later stages score
    higher (so the tournament winner is known)."""

    def run_trial(self, trial, *args, **kwargs):
        metrics = super().run_trial(trial, *args, **kwargs)
        v = trial.hyperparameters.values
        metrics["score"] = sum(v.get(f"stage{i}_filters", 0) * i for i in (1, 2, 3)) / 1000.0
        return metrics


def _moves(space_hps, parent, child):
    """The hyperparameters of `parent` that `child` changed (ignoring ones that a change
    activated or deactivated)."""
    return [k for k in parent if k in child and parent[k] != child[k]]


def _evolution(
    tmp_path,
    seed=0,
    population=3,
    sample=3,
    trials=8,
    budget=None,
    cls=None,
    start=None,
    elite=0,
    filters=(4, 8, 16, 32),
):
    space = _space(filters=filters, max_blocks=2, conv_types=("standard", "separable"))
    start = start or [search_space.hand_point("cnn", 0.25), search_space.hand_point("cnn", 1.0)]
    oracle = oracles.make_oracle(
        "evolution",
        max_trials=trials,
        seed=seed,
        start_points=start,
        population=population,
        sample=sample,
        elite=elite,
    )
    search = (cls or ScoredStub)(
        space,
        oracle,
        data=tiny_dataset(64, SHAPE, CLASSES),
        train_config=train_lib.TrainConfig(epochs=1),
        batch_size=32,
        budget=budget or objective_lib.Budget(max_params=MAX_PARAMS),
        measure=candidate.MeasureConfig(num_runs=5, warmup=1),
        directory=str(tmp_path),
        project_name="p",
    )
    search.sample_within_budget()
    search.search(verbose=0)
    return search, start


def _assert_mutates_window_winners(search):
    """From the 4th trial on (population 3 completed), each trial is one
    neighbouring move away from the best scoring of the last 3 completed
    trials (sample == population: the tournament winner is the window's best)."""
    trials = sorted(search.oracle.trials.values(), key=lambda t: t.trial_id)
    values = [dict(t.hyperparameters.values) for t in trials]
    for i in range(3, len(trials)):
        parent = max(trials[:i][-3:], key=lambda t: t.score).hyperparameters.values
        moved = _moves(None, parent, values[i])
        structural = set(parent) ^ set(values[i])
        assert len(moved) == 1 or (not moved and structural), (parent, values[i])
        for k in moved:
            hp = next(h for h in search.oracle.hyperparameters.space if h.name == k)
            assert values[i][k] in oracles.neighbours(hp, parent[k])


def test_evolution_starts_from_the_hand_points_then_mutates_tournament_winners(tmp_path):
    search, start = _evolution(tmp_path / "a")
    trials = sorted(search.oracle.trials.values(), key=lambda t: t.trial_id)
    values = [dict(t.hyperparameters.values) for t in trials]
    assert len(values) == 8 and _over_budget_trials(search) == []
    # cnn:1.0 (24k parameters) is over MAX_PARAMS: refused by the budget, never trained.
    assert values[0] == start[0] and start[1] not in values
    assert search.oracle.rejected >= 1
    # From the 4th trial on (population 3 completed), each trial is one
    # neighbouring move away from the best of the last 3 completed trials
    # (sample == population: the tournament winner is the window's best).
    _assert_mutates_window_winners(search)
    # One seed, one sequence of trials; another seed, another one.
    again, _ = _evolution(tmp_path / "b")
    other, _ = _evolution(tmp_path / "c", seed=1)
    _assert_mutates_window_winners(other)

    def seq(s):
        return [
            t.hyperparameters.values
            for t in sorted(s.oracle.trials.values(), key=lambda t: t.trial_id)
        ]

    assert seq(again) == values and seq(other) != values


def test_tournament_windows_keep_the_elite_fittest_and_the_latest_of_the_rest():
    import types

    def trial(i, score):
        return types.SimpleNamespace(trial_id=f"{i:02d}", score=score)

    def oracle(elite):
        return oracles.make_oracle("evolution", population=3, sample=2, elite=elite)

    # Two good trials early on, then weak ones.
    done = [trial(0, 0.88), trial(1, 0.86), trial(2, 0.70), trial(3, 0.75), trial(4, 0.72)]
    ids = lambda ts: [t.trial_id for t in ts]  # noqa: E731
    assert ids(oracle(0).window(done)) == ["02", "03", "04"]  # aging alone
    assert ids(oracle(3).window(done)) == ["00", "01", "03"]  # the best, in trial order
    assert ids(oracle(1).window(done)) == ["00", "03", "04"]  # best 1 + latest 2
    assert ids(oracle(2).window(done[2:])) == ["02", "03", "04"]  # all, when few
    # Ties go to the later trial.
    tied = [trial(i, 0.8) for i in range(4)]
    assert ids(oracle(3).window(tied)) == ["01", "02", "03"]
    with pytest.raises(ValueError, match="--evolution_elite"):
        oracle(4)


def test_search_summary_shows_the_figures_the_budget_was_checked_on():
    row = dict(
        trial_id="03",
        status="COMPLETED",
        feasible=True,
        val_accuracy=0.883,
        latency_us=42.2,
        file_bytes=99120,
        int8_latency_us=24.2,
        int8_file_bytes=31360,
        arena_bytes=19072,
        params=24282,
        score=0.883,
        violations="",
    )
    fronts = {name: [row] for name in list(pareto.FRONTS) + list(pareto.FEASIBLE_FRONTS)}
    outputs = dict(rows=[row], fronts=fronts, best=row, paths={report.BEST_HPS_FILE: "b.json"})
    int8 = report.summary_text(dict(outputs, int8=True))
    assert "int8 24.2 us, 31360 bytes" in int8 and "99120" not in int8 and "42.2" not in int8
    assert "accuracy vs int8 latency" in int8 and "accuracy vs latency:" not in int8
    float32 = report.summary_text(dict(outputs, int8=False))
    assert "42.2 us, 99120 bytes" in float32 and "31360" not in float32
    assert "accuracy vs latency:" in float32 and "int8" not in float32


def test_same_cost_copies_share_a_key_and_other_moves_do_not():
    point = search_space.hand_point("cnn", 0.25, stages=4)
    key = search_space.same_cost_key(point)
    assert search_space.same_cost_key(dict(point, activation="relu6")) == key
    assert search_space.same_cost_key(dict(point, dropout=0.1, **{"tuner/epochs": 6})) == key
    for move in (
        {"activation": "hard_swish"},
        {"stage2_blocks": 2},
        {"head_units": 32},
        {"downsample": "strided_first"},
        {"kernel_size": 5},
    ):
        assert search_space.same_cost_key(dict(point, **move)) != key, move


def _trial_row(trial_id, values, acc, nbytes, latency):
    return dict(
        trial_id=trial_id,
        hyperparameters=values,
        status="COMPLETED",
        feasible=True,
        val_accuracy=acc,
        epochs=6,
        int8_file_bytes=nbytes,
        int8_latency_us=latency,
    )


def test_final_entries_mark_same_cost_copies_of_hand_points():
    from nas import final

    space = search_space.StudentSpace((28, 28, 1), 10, filters=(4, 8, 16))
    hand = search_space.hand_point("cnn", 0.25)
    deeper = search_space.hand_point("cnn", 0.25, stages=4)
    rows = [
        _trial_row("00", hand, 0.81, 6816, 10.0),
        _trial_row("08", deeper, 0.86, 10360, 10.4),
        _trial_row("13", dict(hand, activation="relu6"), 0.82, 6816, 10.3),
        _trial_row("14", dict(hand, dropout=0.1), 0.82, 6816, 9.9),
        _trial_row("18", dict(deeper, stage2_blocks=2), 0.87, 11752, 11.7),
    ]
    got = final.entries(rows, top=10, hand=["cnn:0.25"], hypermodel=space)
    marks = {e["name"]: e["copy_of"] for e in got if e["source"] == "search"}
    assert marks == {
        "trial_08": None,
        "trial_13": "cnn_0.25",
        "trial_14": "cnn_0.25",
        "trial_18": None,
    }


def test_final_challengers_are_students_whose_covers_count():
    """A hand point's challenger is the most accurate trial within its cost
    that is no same-cost copy of a hand point, even when a copy scored
    higher: only the former's cover counts as found."""
    from nas import final

    space = search_space.StudentSpace((28, 28, 1), 10, filters=(4, 8, 12, 16, 32))
    hand = search_space.hand_point("cnn", 0.5)
    deeper = search_space.hand_point("cnn", 0.25, stages=4)
    rows = [
        _trial_row("01", hand, 0.850, 12120, 11.1),
        _trial_row("14", dict(hand, dropout=0.1), 0.860, 12120, 11.0),
        _trial_row("34", dict(deeper, stage4_filters=12, head_units=32), 0.856, 11600, 10.6),
        _trial_row("42", dict(deeper, stage3_filters=12), 0.850, 9384, 10.5),
    ]
    got = final.entries(rows, top=1, hand=["cnn:0.5"], hypermodel=space)
    assert [e["name"] for e in got if e["source"] == "search"] == ["trial_34"]
    # Copies are still retrained when the spread along the fronts takes them.
    got = final.entries(rows, top=10, hand=["cnn:0.5"], hypermodel=space)
    assert {"trial_14", "trial_34"} <= {e["name"] for e in got if e["source"] == "search"}
    # Without the rule (every row a challenger) the copy would be taken.
    assert [r["trial_id"] for r in final.select(rows[1:], 1, rows[:1])] == ["14"]


def test_evolution_flags_and_hand_trials_are_not_found_students(tmp_path):
    from nas import final

    with pytest.raises(ValueError, match="--evolution_sample"):
        oracles.make_oracle("evolution", max_trials=2, population=2, sample=3)
    search, start = _evolution(tmp_path, trials=4)
    rows = report.write_outputs(search)["rows"]
    assert any(r["hyperparameters"] == start[0] for r in rows)
    got = final.entries(rows, top=10, hand=["cnn:0.25"], hypermodel=search.hypermodel)
    found = [e for e in got if e["source"] == "search"]
    assert found and all(e["values"] != start[0] for e in found)
    assert [e["name"] for e in got if e["source"] == "hand"] == ["cnn_0.25"]


def test_oracle_seed_zero_is_a_fixed_seed():
    # keras-tuner draws a random seed for a falsy one; seed 0 must not mean "random".
    for kind in ("random", "hyperband", "evolution"):
        a, b = oracles.make_oracle(kind, seed=0), oracles.make_oracle(kind, seed=0)
        assert a.seed == b.seed == oracles.ZERO_SEED
    assert oracles.make_oracle("random", seed=5).seed == 5


def test_the_budget_draw_measures_bytes_as_a_trained_model_has_them(tmp_path):
    """An initialized model's identical constant buffers (zero biases, unit BN
    scales) are stored once; a trained one's are not. The draw must judge the
    bytes the trained file will have."""
    values = search_space.hand_point("cnn", 0.25)
    search = _tuner(tmp_path / "a", oracles.make_oracle("random", max_trials=1))
    search.hypermodel = _space(filters=(4, 8, 16))
    images = search.data.x_train[: candidate.CALIBRATION_IMAGES]

    def int8_bytes(randomize):
        model = search.hypermodel.build(search_space.hyperparameters_from_values(values))
        if randomize:
            rng = np.random.default_rng(1)
            model.set_weights([rng.normal(0, 0.1, w.shape) + 1 for w in model.get_weights()])
        figures = hardware.measure_candidate(model, 2, 1, calibration_images=images)
        return figures["int8_file_bytes"]

    fresh, trained = int8_bytes(False), int8_bytes(True)
    assert fresh < trained  # what makes an untrained measurement wrong
    tight = _tuner(
        tmp_path / "b",
        oracles.make_oracle("random", max_trials=1),
        budget=objective_lib.Budget(max_bytes=(fresh + trained) // 2, int8=True),
    )
    tight.hypermodel = search.hypermodel
    assert not tight.within_budget(values)
    roomy = _tuner(
        tmp_path / "c",
        oracles.make_oracle("random", max_trials=1),
        budget=objective_lib.Budget(max_bytes=trained + 64, int8=True),
    )
    roomy.hypermodel = search.hypermodel
    assert roomy.within_budget(values)


def test_distinct_weights_keep_activations_at_the_initializers_scale():
    """The point that made LiteRT abort in a search's budget draw: with every
    weight drawn from U(0.5, 1.5) its logits reached ~1e11 and the int8 file's
    scales crashed the interpreter. Distinct weights must keep the scale."""
    space = search_space.StudentSpace((28, 28, 1), 10)
    values = {
        "activation": "hard_swish",
        "conv": "inverted",
        "downsample": "maxpool",
        "dropout": 0.0,
        "expansion": 1,
        "head_units": 0,
        "kernel_size": 5,
        "se": 4,
        "stage1_blocks": 1,
        "stage1_filters": 12,
        "stage2_blocks": 1,
        "stage2_filters": 32,
        "stage3_blocks": 2,
        "stage3_filters": 48,
        "stages": 3,
    }
    keras.utils.set_random_seed(0)
    model = space.build(search_space.hyperparameters_from_values(values))
    x = np.random.default_rng(1).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    before = np.abs(model(x).numpy()).max()
    initial = model.get_weights()
    candidate.distinct_weights(model, np.random.default_rng(0))
    after = np.abs(model(x).numpy()).max()
    assert np.isfinite(after) and after < 10 * before + 1
    for w0, w in zip(initial, model.get_weights()):
        # Zero biases and unit scales are distinct now. Two float32 draws may
        # still meet by chance (about once in ten 1,536-weight kernels), so a
        # kernel may keep one tie in a hundred, never a repeated constant.
        assert len(np.unique(w)) >= w.size - w.size // 100
        assert np.all(np.abs(w - w0) <= 0.1 * np.abs(w0) + 0.01 + 1e-6)
    # The old draw, for contrast: all-positive weights blow the logits up.
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in initial])
    assert np.abs(model(x).numpy()).max() > 1e6


def _retime_inputs(max_latency_us):
    """A stand-in search (data, threads, a latency budget) and two final rows, a and b."""
    import types

    search = types.SimpleNamespace(
        data=tiny_dataset(8, SHAPE, CLASSES),
        measure=candidate.MeasureConfig(threads=1),
        budget=objective_lib.Budget(max_latency_us=max_latency_us),
    )
    rows = [
        dict(
            name=n,
            tflite=f"/x/{n}.tflite",
            int8_latency_us=5.0,
            int8_file_bytes=100,
            tflm_runs=True,
        )
        for n in ("a", "b")
    ]
    return search, rows


def test_final_students_are_timed_together_and_the_budget_applied_again(monkeypatch):
    from nas import final

    calls = []

    def together(models, example=None, num_runs=0, warmup=0, threads=1):
        calls.append((dict(models), example.shape, threads))
        return {
            name: {
                "latency_us_median": 10.0 * (i + 1),
                "latency_us_ci95": [1, 2],
                "latency_runs": 7,
            }
            for i, name in enumerate(models)
        }

    monkeypatch.setattr(final.measure_lib, "latency_together", together)
    search, rows = _retime_inputs(max_latency_us=15.0)
    got = final.retime(search, rows)
    assert calls == [({"a": "/x/a.tflite", "b": "/x/b.tflite"}, SHAPE, 1)]
    assert [r["int8_latency_us"] for r in got] == [10.0, 20.0]
    assert [r["int8_latency_us_alone"] for r in got] == [5.0, 5.0]
    assert [r["feasible"] for r in got] == [True, False]
    assert got[1]["violations"].startswith("latency_us+")
    # Timed again (a rerun), the first measurement stays the one kept as "alone".
    final.retime(search, got)
    assert [r["int8_latency_us_alone"] for r in got] == [5.0, 5.0]


def test_final_timing_in_several_processes_takes_each_files_median_process(monkeypatch):
    """With timings=N the files are timed together N times and each row keeps
    the figures of its own median process: one slow process moves no file."""
    from nas import final

    # Per process: (a, b) medians. The second process is slow as a whole.
    # Median processes: a's the third (10.2), b's the first (20.5).
    medians = iter([(10.0, 20.5), (13.0, 26.0), (10.2, 20.0)])
    calls = []

    def together(models, example=None, num_runs=0, warmup=0, threads=1):
        calls.append(dict(models))
        process = next(medians)
        return {
            name: {
                "latency_us_median": m,
                "latency_us_ci95": [m - 0.1, m + 0.1],
                "latency_runs": 100 + len(calls),
            }
            for name, m in zip(models, process)
        }

    monkeypatch.setattr(final.measure_lib, "latency_together", together)
    search, rows = _retime_inputs(max_latency_us=21.0)
    got = final.retime(search, rows, timings=3)
    assert len(calls) == 3 and all(c == calls[0] for c in calls)
    assert [r["int8_latency_us"] for r in got] == [10.2, 20.5]
    assert got[1]["int8_latency_us_ci95"] == [20.4, 20.6] and got[1]["int8_latency_runs"] == 101
    assert got[0]["int8_latency_runs"] == 103
    assert [r["int8_latency_us_timings"] for r in got] == [[10.0, 13.0, 10.2], [20.5, 26.0, 20.0]]
    assert [r["feasible"] for r in got] == [True, True]  # b's slow processes do not count
    with pytest.raises(ValueError, match="timings must be >= 1"):
        final.retime(search, rows, timings=0)


class UntrainedSearch(search.StudentSearch):
    """Real measuring (files), no train_lib."""

    def _fit(self, model, train_config, trial_dir, until_epoch=None):
        return {"history": {}, "train_time_s": 0.0}


@pytest.mark.parametrize("kind", ["random", "hyperband", "evolution"])
def test_draw_counts_are_oracle_state(kind):
    oracle = oracles.make_oracle(kind, max_trials=2, epochs=3)
    oracle.draws, oracle.rejected = 7, 3
    resumed = oracles.make_oracle(kind, max_trials=2, epochs=3)
    assert (resumed.draws, resumed.rejected) == (0, 0)
    resumed.set_state(oracle.get_state())
    assert (resumed.draws, resumed.rejected) == (7, 3)


def _refuse_conversion(*args, **kwargs):
    raise convert_lib.ExportError("converted again")
