"""Shared helpers of the nas tests: tiny spaces, stub searches, rows."""

import fcntl
import os
import shutil

import keras_tuner as kt
import numpy as np
import pytest
from conftest import tiny_dataset

from export import convert as convert_lib
from kd_keras import data as data_lib
from kd_keras import models
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras
from nas import candidate, oracles, report, search
from nas import objective as objective_lib
from nas import space as search_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SHAPE, CLASSES = (12, 12, 1), 10


MAX_PARAMS = 4000


HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)


def tiny_space(**kw):
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


def make_tuner(directory, oracle, cls=search.StudentSearch, space=None, **kw):
    """A search of class `cls` over `space` (default :func:`tiny_space`) on
    tiny data; `kw` replace its arguments."""
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
    return cls(space or tiny_space(), oracle, **args)


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


def over_budget_trials(search):
    return [r for r in report.write_outputs(search)["rows"] if not r["feasible"]]


def random_points(space, count, seed):
    hp = kt.HyperParameters()
    space.build(hp)  # Registers every hyperparameter, conditional ones included.
    rng = np.random.default_rng(seed)
    return [
        {p.name: p.random_sample(int(rng.integers(1 << 30))) for p in hp.space}
        for _ in range(count)
    ]


def check_structure(model, values):
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


def run_point(search, name, **hyperband):
    from keras_tuner.engine import trial as trial_lib

    values = dict(POINT, **{f"tuner/{k}": v for k, v in hyperband.items()})
    trial = trial_lib.Trial(search_space.hyperparameters_from_values(values), trial_id=name)
    return search.run_trial(trial)


class TrialStub:
    """The bit of a keras-tuner Trial that StudentSearch.load_model reads."""

    def __init__(self, trial_id):
        self.trial_id = trial_id


HAND_FILTERS = (4, 8, 12, 16, 24, 32, 48, 64)


def weights_structure(model):
    return [
        (type(l).__name__, [tuple(w.shape) for w in l.weights]) for l in model.layers if l.weights
    ]


def final_row(name, source, acc, nbytes, latency, proxy=0.5):
    return dict(
        name=name,
        source=source,
        test_accuracy=acc,
        int8_file_bytes=nbytes,
        int8_latency_us=latency,
        proxy_val_accuracy=proxy,
    )


class ScoredStub(StubSearch):
    """StubSearch whose score is a known function of the architecture: wider later stages score
    higher (so the tournament winner is known)."""

    def run_trial(self, trial, *args, **kwargs):
        metrics = super().run_trial(trial, *args, **kwargs)
        v = trial.hyperparameters.values
        metrics["score"] = sum(v.get(f"stage{i}_filters", 0) * i for i in (1, 2, 3)) / 1000.0
        return metrics


def moves_between(space_hps, parent, child):
    """The hyperparameters of `parent` that `child` changed (ignoring ones that a change
    activated or deactivated)."""
    return [k for k in parent if k in child and parent[k] != child[k]]


def run_evolution(
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
    space = tiny_space(filters=filters, max_blocks=2, conv_types=("standard", "separable"))
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


def assert_mutates_window_winners(search):
    """From the 4th trial on (population 3 completed), each trial is one
    neighbouring move away from the best scoring of the last 3 completed
    trials (sample == population: the tournament winner is the window's best)."""
    trials = sorted(search.oracle.trials.values(), key=lambda t: t.trial_id)
    values = [dict(t.hyperparameters.values) for t in trials]
    for i in range(3, len(trials)):
        parent = max(trials[:i][-3:], key=lambda t: t.score).hyperparameters.values
        moved = moves_between(None, parent, values[i])
        structural = set(parent) ^ set(values[i])
        assert len(moved) == 1 or (not moved and structural), (parent, values[i])
        for k in moved:
            hp = next(h for h in search.oracle.hyperparameters.space if h.name == k)
            assert values[i][k] in oracles.neighbours(hp, parent[k])


def trial_row(trial_id, values, acc, nbytes, latency):
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


def retime_inputs(max_latency_us):
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


class UntrainedSearch(search.StudentSearch):
    """Real measuring (files), no train_lib."""

    def _fit(self, model, train_config, trial_dir, until_epoch=None):
        return {"history": {}, "train_time_s": 0.0}


def refuse_conversion(*args, **kwargs):
    raise convert_lib.ExportError("converted again")


@pytest.fixture(scope="session")
def searched(tmp_path_factory):
    """A finished three-trial random search with a teacher, and its written
    outputs: for the tests that read a real search.

    The search runs once per test session: the first test process runs it
    (under a lock) in a folder the processes share; every process then opens
    its own copy of the finished project, where keras-tuner resumes it with
    no trial left to run."""
    shared = tmp_path_factory.getbasetemp().parent / "searched"
    shared.mkdir(exist_ok=True)
    keras.utils.set_random_seed(0)
    teacher = models.build("cnn", SHAPE, CLASSES, width=0.25)

    def tuner(directory):
        return make_tuner(
            directory, oracles.make_oracle("random", max_trials=3, seed=3), teacher=teacher
        )

    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            tuner(shared / "project").search(verbose=0)
            (shared / "done").write_text("")
    directory = tmp_path_factory.mktemp("search")
    shutil.copytree(shared / "project", directory, dirs_exist_ok=True)
    search = tuner(directory)
    search.search(verbose=0)  # Reloads the finished trials; none is run again.
    return search, report.write_outputs(search)
