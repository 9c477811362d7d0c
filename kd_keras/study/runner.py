"""The orthogonality study: every technique with and without KD, over seeds.

    python -m kd_keras.main --flagfile=kd_keras/configs/orthogonality_fashion_mnist.flags

One teacher (the pipeline's, cached), then for each technique T and seed s the
student with and without KD under the same budget (``kd_keras.variants``).
Every run is cached under a hash of its configuration, so a crash or a rerun
continues where it stopped and never trains the same run twice. Then the
ensemble view: a bagging baseline, the students' disagreement across seeds,
and an ensemble of teachers as the teacher. ``kd_keras.study.report`` turns
the result into report.md and plots.
"""

import dataclasses
import time

import numpy as np

from kd_keras import data as data_lib
from kd_keras import pipeline, runs, variants
from kd_keras.study import report, stats

AUGMENT = data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=8)

# Technique name -> Variant fields. 'nas' is added when a search result is given.
TECHNIQUES = {
    "none": {},
    "dws": {"student": "cnn_dws"},
    "prune50": {"techniques": ("prune",), "compression": (("sparsity", 0.5),)},
    "prune75": {"techniques": ("prune",), "compression": (("sparsity", 0.75),)},
    "prune90": {"techniques": ("prune",), "compression": (("sparsity", 0.9),)},
    "qat": {"techniques": ("qat",)},
    "cluster": {"techniques": ("cluster",)},
    "augment": {"augment": AUGMENT},
    "prune50+qat": {"techniques": ("prune", "qat"), "compression": (("sparsity", 0.5),)},
}


# Study budget -> the int8 figure of the summary it limits.
BUDGET_FIGURES = {
    "max_bytes": "int8_file_bytes",
    "max_arena_bytes": "int8_arena_bytes",
    "max_latency_us": "int8_latency_us_median",
}


def over_budget(entry, budget):
    """The budgets a technique's summary entry exceeds, e.g. ['max_arena_bytes'];
    a limited figure the technique did not report counts as exceeded."""
    out = []
    for limit, figure in BUDGET_FIGURES.items():
        value = (budget or {}).get(limit)
        if value and (entry.get(figure) is None or entry[figure] > value):
            out.append(limit)
    return out


@dataclasses.dataclass
class StudyConfig:
    """The study on top of a pipeline config (teacher, data, student, budgets).

    Attributes:
      pipeline: the PipelineConfig; its teacher, data, student and training
        settings are shared by every run (its kd_mode and techniques are not
        used).
      techniques: names from TECHNIQUES (plus 'nas' with `nas_student`).
      seeds: seeds; each technique runs once per seed with and without KD.
      nas_student: a NAS result (project dir or best_hyperparameters.json).
      bagging_members: students trained on bootstrap resamples and averaged
        (0 disables the bagging baseline).
      bagging_epochs: epochs per bagging member (default: student epochs //
        members, at least 1, so the bag's total budget matches one student).
      extra_teacher: builder kwargs of a second teacher (same family) for the
        teacher-ensemble experiment; None disables it.
      extra_teacher_epochs: its training epochs.
      budget: device budgets checked against each technique's measured int8
        files, {"max_bytes", "max_arena_bytes", "max_latency_us"} (0 or
        absent = no limit); techniques over a budget are marked in the report.
    """

    pipeline: pipeline.PipelineConfig
    techniques: tuple = tuple(TECHNIQUES)
    seeds: tuple = (0, 1, 2)
    nas_student: str = None
    bagging_members: int = 4
    bagging_epochs: int = 0
    extra_teacher: dict = None
    extra_teacher_epochs: int = 10
    budget: dict = None

    def __post_init__(self):
        bad = {k: v for k, v in (self.budget or {}).items() if k not in BUDGET_FIGURES or v < 0}
        if bad:
            raise ValueError(
                f"Study budgets must be >= 0 and among {sorted(BUDGET_FIGURES)}; got {bad}."
            )
        known = set(TECHNIQUES) | ({"nas"} if self.nas_student else set())
        unknown = [t for t in self.techniques if t not in known]
        if unknown:
            raise ValueError(
                f"Unknown study techniques {unknown}; allowed: {sorted(known)} "
                "('nas' needs --nas_student)."
            )
        if "none" not in self.techniques:
            raise ValueError(
                "The study needs the 'none' technique: every gain is measured against it."
            )
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds must be distinct and non-empty, got {self.seeds}.")
        if self.bagging_members == 1 or self.bagging_members < 0:
            raise ValueError(
                f"bagging_members must be 0 (off) or >= 2, got {self.bagging_members}."
            )


def technique_variant(config, technique, seed, kd):
    """The Variant of one study cell: `technique` at `seed`, with or without KD."""
    p = config.pipeline
    fields = dict(TECHNIQUES.get(technique, {}))
    if technique == "nas":
        fields = {"student": "nas:" + config.nas_student}
    student = fields.pop("student", p.student)
    kwargs = () if student != p.student else tuple(sorted(p.student_kwargs.items()))
    if student == "cnn_dws":
        kwargs = tuple(sorted(p.student_kwargs.items()))
    return variants.Variant(
        label=technique,
        kd=kd,
        student=student,
        student_kwargs=kwargs,
        seed=seed,
        augment=fields.pop("augment", p.student_augment),
        **fields,
    )


def plan(config):
    """Every main-grid variant, in training order: seed by seed, technique by technique."""
    return [
        technique_variant(config, t, s, kd)
        for s in config.seeds
        for t in config.techniques
        for kd in (False, True)
    ]


class Progress:
    """Prints runs done, remaining and the estimated time left."""

    def __init__(self, total):
        self.total, self.done, self.start, self.trained = total, 0, time.time(), 0
        self.trained_time = 0.0

    def step(self, name, seconds, reused):
        self.done += 1
        if not reused:
            self.trained += 1
            self.trained_time += seconds
        left = self.total - self.done
        # Until a run has been trained here there is nothing to estimate from.
        eta = (
            f"{left * self.trained_time / self.trained / 60:.1f} min"
            if self.trained
            else "unknown until a run is trained"
            if left
            else "0.0 min"
        )
        print(
            f"[study] {self.done}/{self.total} {name} "
            f"({'cached' if reused else f'{seconds:.0f}s'}); {left} left, "
            f"elapsed {(time.time() - self.start) / 60:.1f} min, ETA {eta}",
            flush=True,
        )


def _probabilities(model, data):
    logits = model.predict(data_lib.image_batches(data.x_test), verbose=0)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _train_all(ctx, todo, progress, keep_probs):
    rows, probs = [], {}
    for v in todo:
        start = time.time()
        model, row = variants.train(ctx, v)
        progress.step(v.name, time.time() - start, reused=row["reused"])
        rows.append(row)
        if keep_probs(v):
            probs[v.name] = _probabilities(model, ctx.data)
    return rows, probs


def validate(config):
    """Validates every run of the study without loading data or training.

    Raises:
      ValueError: an invalid technique chain, model argument, layer name or
        NAS path, or a second teacher to train beside a teacher given by path.
    """
    if config.extra_teacher and config.pipeline.teacher_paths():
        raise ValueError(
            "--extra_teacher_args builds a second registry teacher, but "
            f"--teacher={config.pipeline.teacher} is a saved model; give the ensemble as "
            "comma-separated --teacher paths."
        )
    pipeline.validate(config.pipeline, todo=plan(config))
    if config.extra_teacher:
        shapes = config.pipeline.shapes()
        pipeline.build_checked(
            config.pipeline.teacher,
            config.extra_teacher,
            "extra_teacher_args",
            shapes.input_shape,
            shapes.num_classes,
        )


def load_data(config):
    """The study's Dataset."""
    return config.pipeline.load_data()


def run(config: StudyConfig):
    """Runs (or resumes) the study and writes results.json, report.md and plots.

    Returns:
      The results dict.
    """
    p = config.pipeline
    validate(config)  # Everything is validated before anything is loaded or trained.
    data = load_data(config)
    grid = plan(config)

    teachers, hashes, teacher_rows = pipeline.train_teachers(p, data)
    ctx = pipeline.variant_context(p, data, teachers, hashes)
    bag = bagging_variants(config) if config.bagging_members else []
    extra = (
        [
            dataclasses.replace(technique_variant(config, "none", s, True), label="ens-teacher")
            for s in config.seeds
        ]
        if config.extra_teacher
        else []
    )
    progress = Progress(len(grid) + len(bag) + len(extra) + (1 if extra else 0))
    print(
        f"[study] {len(config.techniques)} techniques x {len(config.seeds)} seeds x KD on/off"
        f" = {len(grid)} runs, + {len(bag)} bagging members, + {len(extra)} ensemble-teacher "
        f"runs; {describe_budget(config)}",
        flush=True,
    )
    rows, probs = _train_all(ctx, grid, progress, keep_probs=lambda v: v.label == "none")

    results = {
        "dataset": p.dataset,
        "teacher": teacher_rows,
        "runs": rows,
        "seeds": list(config.seeds),
        "techniques": list(config.techniques),
        "config": {
            "study": {k: v for k, v in dataclasses.asdict(config).items() if k != "pipeline"},
            "pipeline": runs.spec_of(p),
        },
    }
    results["summary"] = summarize(rows, config.seeds)
    for entry in results["summary"].values():
        entry["over_budget"] = over_budget(entry, config.budget)
    results["variance"] = variance_view(probs, config.seeds, data.y_test)

    if bag:
        bag_rows, bag_probs = _train_all(ctx, bag, progress, keep_probs=lambda v: True)
        results["bagging"] = bagging_view(bag_rows, bag_probs, data, rows, config)
    if extra:
        results["teacher_ensemble"] = teacher_ensemble_view(
            config, data, teachers, hashes, extra, rows, progress
        )
    report.write(p.workdir, results)
    return results


def bagging_variants(config):
    """The bagging baseline's members: bootstrap resamples of the plain student."""
    p = config.pipeline
    epochs = config.bagging_epochs or max(1, p.student_train.epochs // config.bagging_members)
    base = technique_variant(config, "none", config.seeds[0], False)
    return [
        dataclasses.replace(base, label="bag", bootstrap=b, epochs=epochs)
        for b in range(config.bagging_members)
    ]


def _accuracy(probs, labels):
    return float(np.mean(np.argmax(probs, -1) == labels))


def bagging_view(bag_rows, bag_probs, data, rows, config):
    """The bag's averaged-probability accuracy against single and KD students."""
    members = np.stack([bag_probs[r["name"]] for r in bag_rows])
    single = {r["name"]: r for r in rows}
    s0 = config.seeds[0]
    none_row = single[f"none-nokd-s{s0}"]
    kd_row = single[f"none-kd-s{s0}"]
    ens_acc = _accuracy(members.mean(0), data.y_test)
    return {
        "members": len(bag_rows),
        "epochs_per_member": bag_rows[0]["epochs"],
        "total_epochs": sum(r["epochs"] for r in bag_rows),
        "student_epochs": none_row["epochs"],
        "member_accuracy": stats.mean_std([r["test_accuracy"] for r in bag_rows]),
        "bag_accuracy": ens_acc,
        "bag_params": sum(r["params"] for r in bag_rows),
        "student_accuracy": none_row["test_accuracy"],
        "kd_student_accuracy": kd_row["test_accuracy"],
        "student_accuracy_seeds": stats.mean_std(
            [single[f"none-nokd-s{s}"]["test_accuracy"] for s in config.seeds]
        ),
        "kd_student_accuracy_seeds": stats.mean_std(
            [single[f"none-kd-s{s}"]["test_accuracy"] for s in config.seeds]
        ),
        "student_params": kd_row["params"],
        "member_disagreement": stats.disagreement(members.argmax(-1)),
    }


def variance_view(probs, seeds, labels):
    """How much students of different seeds disagree, without and with KD, and
    what averaging the seeds' probabilities adds: if KD already does what an
    ensemble does, the ensemble of KD students gains less over its members
    than the ensemble of plain students.
    """
    if len(seeds) < 2:
        return None
    out = {}
    for kd in ("nokd", "kd"):
        p = np.stack([probs[f"none-{kd}-s{s}"] for s in seeds])
        out[kd] = {
            "disagreement": stats.disagreement(p.argmax(-1)),
            "prediction_variance": stats.prediction_variance(p),
        }
        members = [_accuracy(m, labels) for m in p]
        ensemble = _accuracy(p.mean(0), labels)
        out[kd].update(
            member_accuracy=stats.mean_std(members),
            ensemble_accuracy=ensemble,
            ensemble_gain=ensemble - float(np.mean(members)),
        )
    return out


def teacher_ensemble_view(config, data, teachers, hashes, extra, rows, progress):
    """KD from [teacher, extra teacher] against KD from the teacher alone."""
    p = config.pipeline
    extra_cfg = dataclasses.replace(
        p,
        teacher_kwargs=dict(config.extra_teacher),
        teacher_train=dataclasses.replace(
            p.teacher_train, epochs=config.extra_teacher_epochs, seed=p.teacher_train.seed + 1
        ),
    )
    start = time.time()
    second, second_hash, second_rows = pipeline.train_teachers(extra_cfg, data)
    progress.step("extra-teacher", time.time() - start, reused=second_rows[0]["reused"])
    ens_ctx = pipeline.variant_context(p, data, teachers + second, hashes + second_hash)
    ens_rows, _ = _train_all(ens_ctx, extra, progress, keep_probs=lambda v: False)
    single = {r["name"]: r["test_accuracy"] for r in rows}
    seeds = config.seeds
    acc_single = [single[f"none-kd-s{s}"] for s in seeds]
    acc_ens = [r["test_accuracy"] for r in ens_rows]
    return {
        "teachers": [r["test_accuracy"] for r in (second_rows)],
        "extra_teacher": {
            "kwargs": config.extra_teacher,
            "epochs": config.extra_teacher_epochs,
            "test_accuracy": second_rows[0]["test_accuracy"],
            "params": second_rows[0]["params"],
        },
        "ensemble_mode": p.kd.ensemble,
        "kd_single_teacher": stats.mean_std(acc_single),
        "kd_teacher_ensemble": stats.mean_std(acc_ens),
        "gain": stats.paired_interval(acc_ens, acc_single),
    }


def _export_figure(row, fmt, key):
    for e in row.get("export") or []:
        if e["format"] == fmt and e.get("threads") == 1:
            return e.get(key)
    return None


def summarize(rows, seeds):
    """Per technique: accuracies, KD gain with paired CI, ratio, additivity, size."""
    by = {(r["label"], r["kd"], r["seed"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    acc = lambda label, kd: [by[(label, kd, s)]["test_accuracy"] for s in seeds]  # noqa: E731

    def tfl(label, kd, fmt):
        vals = [_export_figure(by[(label, kd, s)], fmt, "accuracy") for s in seeds]
        return stats.mean_std(vals) if all(v is not None for v in vals) else None

    gain_none = stats.paired_interval(acc("none", True), acc("none", False))
    summary = {}
    for label in labels:
        gain = stats.paired_interval(acc(label, True), acc(label, False))
        entry = {
            "keras_accuracy": {
                "nokd": stats.mean_std(acc(label, False)),
                "kd": stats.mean_std(acc(label, True)),
            },
            "tflite_accuracy": {
                fmt: {"nokd": tfl(label, False, fmt), "kd": tfl(label, True, fmt)}
                for fmt in ("float32", "int8")
            },
            "kd_gain": gain,
            "orthogonality_ratio": stats.orthogonality_ratio(gain["mean"], gain_none["mean"]),
            "params": by[(label, False, seeds[0])]["params"],
        }
        measured = [by[(label, kd, s)] for s in seeds for kd in (False, True)]
        pruned = [r["sparsity"]["pruned_overall"] for r in measured if r.get("sparsity")]
        if pruned:
            entry["pruned_sparsity"] = stats.mean_std(pruned)
        unique = [r["unique_values"]["max_unique"] for r in measured if r.get("unique_values")]
        if unique:
            entry["max_unique_values"] = int(max(unique))
        if any("qat_layers" in r for r in measured):
            entry["qat_layers"] = all(r.get("qat_layers") for r in measured)
        if label != "none":
            entry["additivity"] = stats.additivity(
                acc("none", False), acc(label, False), acc("none", True), acc(label, True)
            )
        for fmt in ("float32", "int8"):
            for key in ("file_bytes", "gzip_bytes", "latency_us_median", "arena_bytes"):
                vals = [
                    _export_figure(by[(label, kd, s)], fmt, key)
                    for s in seeds
                    for kd in (False, True)
                ]
                vals = [v for v in vals if v is not None]
                if vals:
                    entry[f"{fmt}_{key}"] = float(np.median(vals))
        summary[label] = entry
    return summary


def describe_budget(config):
    """One sentence saying the student and training budget every run shares."""
    p = config.pipeline
    return (
        f"student '{p.student}' {p.student_kwargs}, {p.student_train.epochs} epochs; "
        f"compression stages {p.compress_epochs} epoch(s) each at lr/10 from the trained "
        f"student of the same seed and KD setting"
    )
