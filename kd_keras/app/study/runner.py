"""The orthogonality study: every technique with and without KD, over seeds.

    python -m kd_keras.main --flagfile=kd_keras/configs/orthogonality_fashion_mnist_v2.flags

One teacher (the pipeline's, cached), then for each technique T and seed s the
student with and without KD under the same budget (``kd_keras.app.variants``).
Every run is cached under a hash of its configuration, so a crash or a rerun
continues where it stopped and never trains the same run twice. Then the
ensemble view: bagging baselines at equal total and at equal per-member
budget, the students' disagreement across seeds, and an ensemble of teachers
as the teacher. Every run is a trial of a keras-tuner oracle
(``kd_keras.app.study.grid``), worked through by this process or, distributed,
by keras-tuner workers; the report is then built from the run cache.
``kd_keras.app.study.report`` turns the result into report.md and plots.
"""

import copy
import dataclasses
import os
import time

import numpy as np

from kd_keras import data as data_lib
from kd_keras import distribute, runs
from kd_keras.app import kd_selection, pipeline, variants
from kd_keras.app.study import evidence, pool, report, stats, views
from kd_keras.app.study import grid as grid_lib

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
    # The student sees an augmented view. 'augment' and 'augment_consistent':
    # the teacher sees the same view (through the teacher cache with
    # --teacher_cache_views > 0), the "function matching" recipe;
    # 'augment_inconsistent': the teacher saw the clean image of the example.
    "augment": {"augment": AUGMENT},
    "augment_consistent": {"augment": AUGMENT},
    "augment_inconsistent": {"augment": AUGMENT, "teacher_view": "clean"},
    "prune50+qat": {"techniques": ("prune", "qat"), "compression": (("sparsity", 0.5),)},
    # Channel slimming: half / three quarters of each group's channels removed.
    "slim50": {"techniques": ("slim",), "compression": (("slim_fraction", 0.5),)},
    "slim75": {"techniques": ("slim",), "compression": (("slim_fraction", 0.75),)},
    "slim50+qat": {"techniques": ("slim", "qat"), "compression": (("slim_fraction", 0.5),)},
}


# Bagging budgets: 'total' = members x epochs equals one student's epochs;
# 'member' = every member trains as long as one student.
BAGGING_BUDGETS = ("total", "member")

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
      bagging_epochs: epochs per member of the equal-total-budget bag
        (default: student epochs // members, at least 1, so the bag's total
        budget matches one student).
      bagging_budgets: which bags to train, from BAGGING_BUDGETS: 'total'
        (members of `bagging_epochs`) and/or 'member' (members of the
        student's epochs each).
      extra_teacher: builder kwargs of a second teacher (same family) for the
        teacher-ensemble experiment; None disables it.
      extra_teacher_epochs: its training epochs.
      extra_teacher_path: a saved second teacher (used as a teacher given by
        path is: loaded, never trained) instead of `extra_teacher`.
      budget: device budgets checked against each technique's measured int8
        files, {"max_bytes", "max_arena_bytes", "max_latency_us"} (0 or
        absent = no limit); techniques over a budget are marked in the report.
      primary_metric, alpha, equivalence_margin: the statistical design the
        report's tests follow (``kd_keras.app.study.evidence.Design``; the
        margin in accuracy points).
      extend_seeds: allow `seeds` to add seeds to a finished study in the
        workdir (its results.json written); without it the study refuses
        (``kd_keras.app.study.pool.seed_extension``).
    """

    pipeline: pipeline.PipelineConfig
    techniques: tuple = tuple(TECHNIQUES)
    seeds: tuple = (0, 1, 2)
    nas_student: str = None
    bagging_members: int = 4
    bagging_epochs: int = 0
    bagging_budgets: tuple = BAGGING_BUDGETS
    extra_teacher: dict = None
    extra_teacher_epochs: int = 10
    extra_teacher_path: str = None
    budget: dict = None
    primary_metric: str = "test_accuracy"
    alpha: float = 0.05
    equivalence_margin: float = 0.5
    extend_seeds: bool = False

    def __post_init__(self):
        evidence.Design(
            self.seeds or (0,), self.primary_metric, self.alpha, self.equivalence_margin
        )
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
        bad_budgets = [b for b in self.bagging_budgets if b not in BAGGING_BUDGETS]
        if bad_budgets or not self.bagging_budgets:
            raise ValueError(
                f"bagging_budgets must be a non-empty list from {BAGGING_BUDGETS}, "
                f"got {list(self.bagging_budgets)}."
            )
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
        student_init=p.student_init if student == p.student else "scratch",
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


def _train_all(study, todo):
    """Rows of variants, trained or loaded (:meth:`Runs.train`), and the test
    probabilities of those the aggregation reads (:meth:`Runs.needs_probabilities`)."""
    rows, probs = [], {}
    for v in todo:
        row, p = study.train(v, probabilities=study.needs_probabilities(v))
        rows.append(row)
        if p is not None:
            probs[v.name] = p
    return rows, probs


def validate(config):
    """Validates every run of the study without loading data or training.

    Raises:
      ValueError: an invalid technique chain, model argument, layer name or
        NAS path, or a second teacher to train beside a teacher given by path.
    """
    if config.extra_teacher and config.extra_teacher_path:
        raise ValueError(
            "--extra_teacher_args and --extra_teacher_path both give the second teacher; give one."
        )
    if config.extra_teacher_path and not os.path.exists(config.extra_teacher_path):
        raise ValueError(
            f"--extra_teacher_path={config.extra_teacher_path} does not exist; give a saved "
            "model (.keras, .h5 or a SavedModel directory)."
        )
    if config.extra_teacher and config.pipeline.teacher_paths():
        raise ValueError(
            "--extra_teacher_args builds a second registry teacher, but "
            f"--teacher={config.pipeline.teacher} is a saved model; give the ensemble as "
            "comma-separated --teacher paths."
        )
    if config.pipeline.kd_select is not None and distribute.distributed_role() != "single":
        raise ValueError(
            "--kd_select chooses the KD setting in one process; in a distributed study run "
            "it once first (one process, --seeds=<first seed>), then give the chosen "
            "--kd_losses, --temperature and --alpha to the distributed study."
        )
    pipeline.validate(config.pipeline, todo=plan(config))
    if config.extra_teacher:
        shapes = config.pipeline.data.placeholder()
        pipeline.build_checked(
            config.pipeline.teacher,
            config.extra_teacher,
            "extra_teacher_args",
            shapes.input_shape,
            shapes.num_classes,
        )


def load_data(config):
    """The study's Dataset."""
    return config.pipeline.data.load()


EXTRA_TEACHER = "extra-teacher"


class Runs:
    """Every run of the study, by label, each callable as a grid trial.

    The labels are the variants' names ('none-kd-s0', 'bag-nokd-s0-b1',
    'ens-teacher-kd-s2') and 'extra-teacher'; the order is the order trials
    start: the second teacher first (the ensemble runs need it), then the
    grid seed by seed, the bags, the ensemble runs. `selection` is the
    --kd_select sweep that chose the KD setting of `config`, if one ran.
    """

    def __init__(self, config, data, teachers, hashes, selection=None):
        self.config, self.data = config, data
        self.selection = selection
        self.teachers, self.hashes = teachers, hashes
        self.ctx = pipeline.variant_context(config.pipeline, data, teachers, hashes)
        self.grid = plan(config)
        self.bags = (
            {b: bagging_variants(config, b) for b in config.bagging_budgets}
            if config.bagging_members
            else {}
        )
        self.ensemble = (
            [
                dataclasses.replace(technique_variant(config, "none", s, True), label="ens-teacher")
                for s in config.seeds
            ]
            if config.extra_teacher or config.extra_teacher_path
            else []
        )
        self._extra = None
        self._trained = {}

    def variants(self):
        """Every student variant, without repeats, in trial order."""
        out = self.grid + [v for bag in self.bags.values() for v in bag] + self.ensemble
        return list(dict.fromkeys(out))

    def extra_teacher(self):
        """(models, digests, rows) of [second teacher], trained once (cached)."""
        if self._extra is None and self.config.extra_teacher_path:
            p = self.config.pipeline
            extra_cfg = dataclasses.replace(p, teacher=self.config.extra_teacher_path)
            self._extra = pipeline.load_teachers(extra_cfg, self.data)
        if self._extra is None:
            p = self.config.pipeline
            extra_cfg = dataclasses.replace(
                p,
                teacher_kwargs=dict(self.config.extra_teacher),
                teacher_train=dataclasses.replace(
                    p.teacher_train,
                    epochs=self.config.extra_teacher_epochs,
                    seed=p.teacher_train.seed + 1,
                ),
            )
            self._extra = pipeline.train_teachers(extra_cfg, self.data)
        return self._extra

    def needs_probabilities(self, variant):
        """Whether the aggregation reads the variant's test probabilities:
        the plain students of the grid (variance) and the bags' members."""
        bags = [v for bag in self.bags.values() for v in bag]
        return (variant.label == "none" and variant in self.grid) or variant in bags

    def train(self, variant, probabilities=False):
        """(row, test probabilities or None) of a variant, trained or loaded
        in its context once per process and kept (not its model): the grid's
        trials, the interim and the final aggregation share them instead of
        loading every run's model again. With `probabilities`, the
        probabilities are computed, loading the model if they were not."""
        row, probs = self._trained.get(variant, (None, None))
        if row is None or (probabilities and probs is None):
            ctx = self.context(variant)
            model, row = variants.train(ctx, variant)
            if probabilities:
                probs = _probabilities(model, ctx.data)
            self._trained[variant] = (row, probs)
        return copy.deepcopy(row), probs

    def context(self, variant):
        """The Context a variant trains in (the teacher ensemble's for 'ens-teacher')."""
        if variant.label != "ens-teacher":
            return self.ctx
        second, second_hash, _ = self.extra_teacher()
        p = self.config.pipeline
        return pipeline.variant_context(
            p, self.data, self.teachers + second, self.hashes + second_hash
        )

    def jobs(self, progress=None, on_done=None):
        """{label: () -> test accuracy} of every run, in trial order.

        Args:
          progress: a Progress told of every run as it ends.
          on_done: called with the run's label after it ends (and after
            `progress`).
        """
        out = {}
        if self.ensemble:
            out[EXTRA_TEACHER] = self._timed(
                EXTRA_TEACHER, lambda: self.extra_teacher()[2][0], progress, on_done
            )
        for v in self.variants():
            out[v.name] = self._timed(
                v.name,
                lambda v=v: self.train(v, self.needs_probabilities(v))[0],
                progress,
                on_done,
            )
        return out

    @staticmethod
    def _timed(name, fn, progress, on_done=None):
        def job():
            start = time.time()
            row = fn()
            if progress is not None:
                progress.step(name, time.time() - start, reused=row["reused"])
            if on_done is not None:
                on_done(name)
            return row["test_accuracy"]

        return job


INTERIM_DIR = "interim"


def interim_dir(workdir):
    """Where a study in `workdir` writes the report of its finished seeds."""
    return os.path.join(workdir, INTERIM_DIR)


class Interim:
    """The report of the seeds finished so far, while later seeds still train.

    The grid trains seed by seed. Each time every grid run of another seed
    has ended and seeds remain, results.json, report.md and the plots of the
    finished seeds are written to ``<workdir>/interim/`` (bagging and
    teacher-ensemble views wait for the full report, which goes to the
    workdir itself when every run has ended). A study stopped part way thus
    leaves the report of its finished seeds, which
    ``kd_keras.app.study.pool`` can pool with other batches. Only the grid's
    cached runs are read; a failure here is printed and never stops the
    study.
    """

    def __init__(self, config, data, study, teacher_rows, extension=None):
        self.config, self.data, self.study = config, data, study
        self.teacher_rows, self.extension = teacher_rows, extension
        self.by_seed = {s: {v.name for v in study.grid if v.seed == s} for s in config.seeds}
        self.ended, self.written = set(), ()

    def done_seeds(self):
        """The seeds all of whose grid runs have ended, in the study's order."""
        return tuple(s for s in self.config.seeds if self.by_seed[s] <= self.ended)

    def __call__(self, label):
        self.ended.add(label)
        done = self.done_seeds()
        if not done or done == self.written or len(done) == len(self.config.seeds):
            return
        self.written = done
        out = interim_dir(self.config.pipeline.workdir)
        try:
            ext = self.extension and [s for s in self.extension["added"] if s in done]
            ext = ext and dict(self.extension, added=ext)
            aggregate(
                self.config, self.data, self.study, self.teacher_rows, seeds=done, extension=ext
            )
        except Exception as e:  # noqa: BLE001 - an interim report must not end a long study.
            print(f"[study] the interim report of seeds {list(done)} failed: {e!r}", flush=True)
            return
        print(
            f"[study] interim report of seeds {list(done)} "
            f"({len(done)} of {len(self.config.seeds)}) written to {out}",
            flush=True,
        )


def run(config: StudyConfig, role=None):
    """Runs (or resumes) the study and writes results.json, report.md and plots.

    Args:
      config: the StudyConfig.
      role: 'single' (this process runs every trial), 'chief' (serves the
        trials to keras-tuner workers, then writes the report) or 'worker'
        (runs trials it is given; no report). Default: from the
        ``KERASTUNER_*`` environment (``kd_keras.distribute.distributed_role``).

    Returns:
      The results dict (None on a worker).
    """
    p = config.pipeline
    role = role or distribute.distributed_role()
    validate(config)  # Everything is validated before anything is loaded or trained.
    extension = None
    if role != "worker":  # Refuses seeds added to a finished study without --extend_seeds.
        extension = pool.seed_extension(p.workdir, config.seeds, config.extend_seeds)
    data = load_data(config)

    teachers, hashes, teacher_rows = pipeline.train_teachers(p, data)
    config, selection = select_kd(config, data, teachers, hashes)
    study = Runs(config, data, teachers, hashes, selection)
    jobs = study.jobs()
    progress = Progress(len(jobs))
    interim = Interim(config, data, study, teacher_rows, extension) if role == "single" else None
    jobs = study.jobs(progress, interim)
    if role != "worker":
        n_bag = sum(len(b) for b in study.bags.values())
        print(
            f"[study] {len(config.techniques)} techniques x {len(config.seeds)} seeds x KD "
            f"on/off = {len(study.grid)} runs, + {n_bag} bagging members, + "
            f"{len(study.ensemble)} ensemble-teacher runs = {len(jobs)} trials ({role}); "
            f"{describe_budget(config)}",
            flush=True,
        )
    if grid_lib.run(jobs, p.workdir, role) == "worker":
        return None
    return aggregate(config, data, study, teacher_rows, extension=extension)


def select_kd(config, data, teachers, hashes):
    """--kd_select: the KD setting every KD run of the study uses, chosen on the
    validation split with the first seed's plain student
    (``kd_keras.app.kd_selection.select``; the test split plays no part).

    Returns:
      (`config` with the chosen setting as its pipeline's KD, the selection
      dict), or (`config`, None) without --kd_select.
    """
    p = config.pipeline
    if p.kd_select is None:
        return config, None
    print(
        f"[study] choosing the KD setting on validation: {p.kd_select.size} settings, "
        f"seed {config.seeds[0]}",
        flush=True,
    )
    ctx = pipeline.variant_context(p, data, teachers, hashes)
    plain = technique_variant(config, "none", config.seeds[0], False)
    chosen, selection = kd_selection.select(ctx, plain, p.student_train, p.kd_select)
    print(
        "[study] chosen: {loss}, T={temperature:g}, alpha={alpha:g}".format(**selection["chosen"]),
        flush=True,
    )
    return dataclasses.replace(config, pipeline=dataclasses.replace(p, kd=chosen)), selection


def aggregate(config, data, study, teacher_rows, seeds=None, extension=None):
    """The results of a study whose runs are all finished (loaded from the
    run cache), written to the workdir as results.json, report.md and plots.

    `extension` (``pool.seed_extension``) is stored as ``seed_extension``:
    the report then says which seeds were added after an interim look.

    With `seeds` (a part of the study's seeds whose grid runs have ended),
    the interim results of those seeds alone, without the bagging and
    teacher-ensemble views, written to ``<workdir>/interim/`` (:class:`Interim`).
    """
    p = config.pipeline
    out_dir = p.workdir
    interim = None
    if seeds is not None:
        interim = {"seeds_done": list(seeds), "seeds_planned": list(config.seeds)}
        config = dataclasses.replace(config, seeds=tuple(seeds))
        out_dir = interim_dir(p.workdir)
        os.makedirs(out_dir, exist_ok=True)
    grid = [v for v in study.grid if v.seed in config.seeds]
    rows, probs = _train_all(study, grid)
    results = {
        "dataset": p.data.dataset,
        "teacher": teacher_rows,
        "runs": rows,
        "seeds": list(config.seeds),
        "techniques": list(config.techniques),
        "config": {
            "study": {k: v for k, v in dataclasses.asdict(config).items() if k != "pipeline"},
            "pipeline": runs.spec_of(p),
        },
    }
    results["summary"] = views.summarize(rows, config.seeds)
    for entry in results["summary"].values():
        entry["over_budget"] = over_budget(entry, config.budget)
    results["additivity"] = views.additivity_pairs(rows, config.seeds)
    results["variance"] = views.variance_view(probs, config.seeds, data.y_test)

    if interim:
        results["interim"] = interim
    if extension:
        results["seed_extension"] = extension
    members = {}
    if study.bags and not interim:
        results["bagging"] = {}
        for budget, bag in study.bags.items():
            bag_rows, bag_probs = _train_all(study, bag)
            view = views.bagging_view(bag_rows, bag_probs, data, rows, config)
            results["bagging"][budget] = dict(view, budget=budget)
            members[budget] = np.stack([bag_probs[r["name"]] for r in bag_rows])
    if results["variance"]:  # Per-image predictions exist only here: bootstrap now.
        arm = lambda kd: np.stack([probs[f"none-{kd}-s{s}"] for s in config.seeds])  # noqa: E731
        results["bagging_intervals"] = evidence.bagging_bootstrap(
            arm("nokd"), arm("kd"), data.y_test, members
        )
    if study.ensemble and not interim:
        results["teacher_ensemble"] = teacher_ensemble_view(config, study, rows)
    if study.selection:
        results["kd_selection"] = study.selection
    results["evidence"] = evidence.analyze(results)
    results["kd_as_bagging"] = report.bagging_verdict(results, results["evidence"]["bagging"])
    report.write(out_dir, results)
    return results


def bagging_variants(config, budget="total"):
    """A bag's members: bootstrap resamples of the plain student.

    Args:
      config: the StudyConfig.
      budget: 'total' (members of `bagging_epochs`, by default the student's
        epochs shared among the members) or 'member' (each member trains
        the student's epochs).
    """
    p = config.pipeline
    if budget == "member":
        epochs, label = p.student_train.epochs, "bag-member"
    else:
        epochs = config.bagging_epochs or max(1, p.student_train.epochs // config.bagging_members)
        label = "bag"
    base = technique_variant(config, "none", config.seeds[0], False)
    return [
        dataclasses.replace(base, label=label, bootstrap=b, epochs=epochs)
        for b in range(config.bagging_members)
    ]


def teacher_ensemble_view(config, study, rows):
    """KD from [teacher, extra teacher] against KD from the teacher alone."""
    second, _, second_rows = study.extra_teacher()
    ens_rows, _ = _train_all(study, study.ensemble)
    single = {r["name"]: r["test_accuracy"] for r in rows}
    seeds = config.seeds
    acc_single = [single[f"none-kd-s{s}"] for s in seeds]
    acc_ens = [r["test_accuracy"] for r in ens_rows]
    del second
    return {
        "teachers": [r["test_accuracy"] for r in second_rows],
        "extra_teacher": {
            "kwargs": config.extra_teacher or {"path": config.extra_teacher_path},
            "epochs": config.extra_teacher_epochs,
            "test_accuracy": second_rows[0]["test_accuracy"],
            "params": second_rows[0]["params"],
        },
        "ensemble_mode": config.pipeline.kd.ensemble,
        "kd_single_teacher": stats.mean_std(acc_single),
        "kd_teacher_ensemble": stats.mean_std(acc_ens),
        "gain": stats.paired_interval(acc_ens, acc_single),
    }


def describe_budget(config):
    """One sentence saying the student and training budget every run shares."""
    p = config.pipeline
    return (
        f"student '{p.student}' {p.student_kwargs}, {p.student_train.epochs} epochs; "
        f"compression stages {p.compress.epochs} epoch(s) each at lr/10 from the trained "
        f"student of the same seed and KD setting"
    )
