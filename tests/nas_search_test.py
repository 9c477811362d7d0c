"""nas.search and nas.candidate: trials, budgets, resumption, Hyperband, measurement."""

import json
import logging
import os

import keras_tuner as kt
import numpy as np
import pytest
from conftest import tiny_dataset
from nas_helpers import (
    CLASSES,
    MAX_PARAMS,
    SHAPE,
    StubSearch,
    TrialStub,
    make_tuner,
    over_budget_trials,
    random_points,
    run_point,
    tiny_space,
)

from export import convert as convert_lib
from kd_keras import data as data_lib
from kd_keras import distill, models
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras
from nas import candidate, hardware, oracles, report, search
from nas import objective as objective_lib
from nas import space as search_space


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


def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path):
    first = make_tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    first.interrupt_at = 2
    with pytest.raises(KeyboardInterrupt):
        first.search(verbose=0)
    finished, interrupted = first.calls

    second = make_tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    second.search(verbose=0)
    assert finished not in second.calls
    assert second.calls[0] == interrupted and len(second.calls) == 2

    third = make_tuner(tmp_path, oracles.make_oracle("random", max_trials=3, seed=1), StubSearch)
    third.search(verbose=0)
    assert getattr(third, "calls", []) == []
    rows = report.write_outputs(third)["rows"]
    assert sorted(r["trial_id"] for r in rows) == sorted([finished] + second.calls)
    assert all(r["status"] == "COMPLETED" for r in rows)


def test_a_project_refuses_to_resume_on_other_data(tmp_path):
    make_tuner(tmp_path, oracles.make_oracle("random", max_trials=1, seed=1), StubSearch)
    other = tiny_dataset(64, SHAPE, CLASSES, seed=5)  # Same name and counts, other images.
    with pytest.raises(search.OtherDataError, match="--overwrite"):
        make_tuner(tmp_path, oracles.make_oracle("random", max_trials=1, seed=1), data=other)
    # The same data resumes; --overwrite starts afresh on the new data.
    make_tuner(tmp_path, oracles.make_oracle("random", max_trials=1, seed=1), StubSearch)
    make_tuner(tmp_path, oracles.make_oracle("random", max_trials=1), data=other, overwrite=True)
    make_tuner(tmp_path, oracles.make_oracle("random", max_trials=1), data=other)


def test_hyperband_without_a_parent_state_warm_starts_from_its_weights(tmp_path):
    """The stub trains nothing, so no trial leaves a checkpoint to continue: a
    promoted trial falls back to the parent's weights and its remaining epochs."""
    oracle = oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2, seed=0)
    search = make_tuner(tmp_path, oracle, StubSearch, train_config=train_lib.TrainConfig(epochs=2))
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


def test_sampling_within_the_budget_trains_only_candidates_that_fit(tmp_path):
    """The space's wide (48-filter) stages break MAX_PARAMS; drawn within the
    budget, no trial is over it. The same oracle seed without it trains some
    that are (so the first assertion can fail)."""
    plain = make_tuner(
        tmp_path / "plain", oracles.make_oracle("random", max_trials=6, seed=2), StubSearch
    )
    plain.search(verbose=0)
    assert over_budget_trials(plain), "the control search should meet over-budget draws"

    search = make_tuner(
        tmp_path / "within", oracles.make_oracle("random", max_trials=6, seed=2), StubSearch
    )
    assert search.sample_within_budget()
    search.search(verbose=0)
    assert len(search.calls) == 6 and over_budget_trials(search) == []
    assert search.oracle.rejected >= 1 and search.oracle.draws == 6 + search.oracle.rejected


def test_sampling_within_the_budget_under_hyperband_and_when_it_cannot(tmp_path):
    oracle = oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2, seed=0)
    search = make_tuner(
        tmp_path / "hb", oracle, StubSearch, train_config=train_lib.TrainConfig(epochs=2)
    )
    assert search.sample_within_budget()
    search.search(verbose=0)
    assert search.oracle.draws >= 2 and over_budget_trials(search) == []
    bayes = make_tuner(tmp_path / "b", oracles.make_oracle("bayesian", max_trials=2), StubSearch)
    assert not bayes.sample_within_budget()  # It proposes its own points.
    unlimited = make_tuner(
        tmp_path / "u",
        oracles.make_oracle("random", max_trials=2),
        StubSearch,
        budget=objective_lib.Budget(),
    )
    assert not unlimited.sample_within_budget()


def test_within_budget_measures_the_untrained_files(tmp_path, monkeypatch):
    """The real check converts and measures the untrained candidate: to
    float32 only when the budget limits the float32 file."""
    values = random_points(tiny_space(), 1, seed=0)[0]
    formats = []
    convert = convert_lib.convert

    def spy(model, fmt, **kwargs):
        formats.append(fmt)
        return convert(model, fmt, **kwargs)

    monkeypatch.setattr(convert_lib, "convert", spy)
    roomy = make_tuner(tmp_path / "a", oracles.make_oracle("random", max_trials=1))
    assert roomy.within_budget(values)
    assert formats == ["int8", "float32"]  # make_tuner's budget limits the float32 latency
    formats.clear()
    tight = make_tuner(
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
    search = make_tuner(tmp_path, oracle, StubSearch, budget=objective_lib.Budget(max_params=5000))
    assert search.within_budget(start[0])  # 1,758 parameters
    assert not any("over the budget" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING):
        assert not search.within_budget(start[1])  # 24k parameters
        assert not search.within_budget(dict(start[1], stage3_filters=48))  # not a start point
    (line,) = [r.getMessage() for r in caplog.records if "over the budget" in r.getMessage()]
    assert line.startswith("Start point 2 of 2 (--start_points)")
    model = search.hypermodel.build(search_space.hyperparameters_from_values(start[1]))
    assert f"params {model.count_params()} > --max_params=5000" in line


def test_short_training_evaluates_in_inference_mode():
    """A trial trains a few dozen steps; BatchNorm's moving statistics must keep
    up, or every candidate scores near chance in inference mode (validation)."""
    space = tiny_space(filters=(16,))
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


@pytest.mark.slow(20)
def test_promoted_trial_continues_its_parent_like_one_uninterrupted_run(tmp_path):
    """Hyperband promotion with distillation through the teacher cache (augmented
    students): trial b continues trial a (1 -> 2 epochs of a 2-epoch schedule) and
    ends with the weights of trial c, trained 2 epochs in one go."""
    keras.utils.set_random_seed(0)
    teacher = models.build("cnn", SHAPE, CLASSES, width=0.25)
    search = make_tuner(
        tmp_path,
        oracles.make_oracle("hyperband", epochs=2, hyperband_factor=2),
        train_config=train_lib.TrainConfig(epochs=2, learning_rate=1e-2),
        augment=data_lib.AugmentConfig(crop_padding=1, flip=True),
        teacher=teacher,
        kd=distill.KDConfig(teacher_cache_views=2),
    )
    first = run_point(search, "a", epochs=1, initial_epoch=0)
    progress = train_lib.read_progress(search.get_trial_dir("a"))
    assert progress["epochs_done"] == 1 and progress["finished"] is False
    assert first["epochs"] == 1
    promoted = run_point(search, "b", epochs=2, initial_epoch=1, trial_id="a")
    whole = run_point(search, "c", epochs=2, initial_epoch=0)
    assert promoted["epochs"] == whole["epochs"] == 2
    continued = search.load_model(TrialStub("b"))
    direct = search.load_model(TrialStub("c"))
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


def test_the_budget_draw_measures_bytes_as_a_trained_model_has_them(tmp_path):
    """An initialized model's identical constant buffers (zero biases, unit BN
    scales) are stored once; a trained one's are not. The draw must judge the
    bytes the trained file will have."""
    values = search_space.hand_point("cnn", 0.25)
    search = make_tuner(tmp_path / "a", oracles.make_oracle("random", max_trials=1))
    search.hypermodel = tiny_space(filters=(4, 8, 16))
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
    tight = make_tuner(
        tmp_path / "b",
        oracles.make_oracle("random", max_trials=1),
        budget=objective_lib.Budget(max_bytes=(fresh + trained) // 2, int8=True),
    )
    tight.hypermodel = search.hypermodel
    assert not tight.within_budget(values)
    roomy = make_tuner(
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
