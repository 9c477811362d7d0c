"""The search: keras-tuner oracles driving our own trial loop, hardware-aware.

keras-tuner's ``Tuner`` refuses ``tf_keras`` models when Keras 3 is installed,
so :class:`StudentSearch` builds on ``keras_tuner.engine.base_tuner.BaseTuner``
and keeps what keras-tuner is good at: the oracles (random search, Bayesian
optimization, Hyperband, and here regularized evolution started from given
points such as the hand-designed students), the project directory with resumption
(``overwrite=False``: finished trials are never rerun, an interrupted one is
rerun) and the chief/worker distributed mode (``KERASTUNER_*`` environment
variables). Each trial (:meth:`StudentSearch.run_trial`):

1. builds the candidate from its hyperparameters (``nas.search_space``);
2. trains it with ``kd_keras.training.fit`` -- through the Distiller when a
   teacher is given, with the teacher's logits computed once per search in
   the teacher cache (``<project>/teacher_cache``) when the students train
   with augmentation and ``KDConfig.teacher_cache_views`` > 0 -- for the
   configured epochs; under Hyperband (successive halving) up to
   ``tuner/epochs`` epochs of a learning-rate schedule defined over the
   largest budget (``max_epochs``). A promoted trial (``tuner/trial_id``)
   *continues* its parent's training: the parent's checkpoint (weights,
   optimizer moments and iteration count, random state) is copied into the
   new trial's directory and ``fit`` resumes it at epoch
   ``tuner/initial_epoch``, on the schedule where the parent stopped. A
   trial promoted to ``max_epochs`` thus ends with the very weights of a
   trial trained ``max_epochs`` in one go (tests/nas_test.py);
3. measures validation accuracy, saves ``trial_<id>/model.keras``, converts
   the model to float32 TFLite (``trial_<id>/model.tflite``) and measures its
   median single-example latency in LiteRT, its bytes and its parameters;
   converts it to int8 and measures that file's latency and bytes and its
   TensorFlow Lite Micro arena;
4. applies the budget and returns the objective.

Objective (``score``, maximized)::

    score = val_accuracy                                 if within every budget
    score = val_accuracy - 1 - sum_k max(0, x_k / B_k - 1)   otherwise

where ``x_k`` is latency (median us), file bytes, Keras parameters or TFLM
arena bytes and ``B_k`` its budget (latency and bytes of the float32 file, or
of the int8 file with ``Budget(int8=True)``). Every feasible trial therefore
scores in [0, 1] and every infeasible one strictly below 0, so ranking by
score ranks feasible trials by accuracy first; the relative overshoot tells
the Bayesian oracle how far out of budget a point was. Infeasible trials are
completed trials like any other: recorded, tabulated and plotted, never
dropped.

Sampling within the budget. A candidate's device cost (its TFLM arena, its
LiteRT latency, its parameters; its files' bytes, given weights as distinct
as trained ones) does not depend on the weights' values, so it can be
measured before any training. With :meth:`StudentSearch.sample_within_budget`
the random, Hyperband and evolution oracles redraw a new candidate (up to
``MAX_DRAWS`` times) until its int8 and float32 files, with random weights,
meet the budget: the trials, and Hyperband's rungs, are then
spent on candidates that can be deployed, not on points the budget rules
out. Latency is measured, so a candidate near its latency limit can be
accepted by the draw and found over it after training (it is then scored as
infeasible, like any other).
"""

import dataclasses
import logging
import math
import os
import re

import keras_tuner as kt
import numpy as np
from keras_tuner.engine import base_tuner

from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import data as data_lib
from kd_keras import runs, training
from kd_keras.keras_compat import keras
from nas import hardware, pareto, search_space

ORACLES = ("random", "bayesian", "hyperband", "evolution")
OBJECTIVE = "score"
MODEL_FILE = "model.keras"
# Figures every completed trial reports to the oracle (all numbers).
METRICS = (
    "score",
    "val_accuracy",
    "feasible",
    "latency_us",
    "latency_us_p90",
    "file_bytes",
    "gzip_bytes",
    "params",
    "tflite_params",
    "macs",
    "int8_latency_us",
    "int8_file_bytes",
    "epochs",
    "train_time_s",
    "arena_bytes",
    "over_latency_us",
    "over_file_bytes",
    "over_params",
    "over_arena_bytes",
)


# Training images that calibrate each candidate's int8 file (its TFLM arena).
CALIBRATION_IMAGES = 64
# A trial's float32 file in its directory; its int8 file is beside it
# (nas.hardware.int8_path).
TRIAL_TFLITE = "model.tflite"
# Random draws per new trial when sampling within the budget.
MAX_DRAWS = 50
# The oracle seed used for seed 0 (keras-tuner would draw a random one).
ZERO_SEED = 7919


def distributed_role(environ=None):
    """'single', 'chief' or 'worker', from keras-tuner's environment variables.

    keras-tuner runs distributed when ``KERASTUNER_ORACLE_IP`` is set (with
    ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID``); the process whose
    tuner id contains ``chief`` serves the oracle, the others run trials.
    """
    env = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in env:
        return "single"
    return "chief" if "chief" in env.get("KERASTUNER_TUNER_ID", "") else "worker"


@dataclasses.dataclass(frozen=True)
class Budget:
    """Hardware budget of a deployable student; 0 disables a limit.

    Attributes:
      max_latency_us: median single-example float32 TFLite latency in LiteRT.
      max_bytes: float32 ``.tflite`` file size.
      max_params: Keras parameter count (``model.count_params()``).
      max_arena_bytes: tensor-arena bytes TensorFlow Lite Micro allocates for
        the int8 file (a model TFLM cannot run is over any arena budget).
      int8: latency and bytes are those of the int8 file (``int8_latency_us``,
        ``int8_file_bytes``) instead of the float32 one.
    """

    max_latency_us: float = 0.0
    max_bytes: int = 0
    max_params: int = 0
    max_arena_bytes: int = 0
    int8: bool = False

    LIMITS = (
        ("latency_us", "max_latency_us"),
        ("file_bytes", "max_bytes"),
        ("params", "max_params"),
        ("arena_bytes", "max_arena_bytes"),
    )

    def __post_init__(self):
        if not isinstance(self.int8, bool):
            raise ValueError(f"int8 must be a bool, got {self.int8!r}.")
        for _, attr in self.LIMITS:
            value = getattr(self, attr)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{attr} must be a number >= 0 (0 = no limit), got {value!r}.")

    def excess(self, figures):
        """Relative overshoot per limited figure: max(0, value / limit - 1).

        Args:
          figures: dict holding latency_us, file_bytes and params.

        Returns:
          {figure name: overshoot}, one entry per enabled limit (0.0 = within).

        Raises:
          ValueError: a limited figure is missing from `figures`.
        """
        out = {}
        for figure, attr in self.LIMITS:
            limit = getattr(self, attr)
            if not limit:
                continue
            source = self.figure(figure)
            if source not in figures:
                raise ValueError(
                    f"{attr} is set but the trial reported no {source!r} (got {sorted(figures)})."
                )
            if figure == "arena_bytes" and figures.get("tflm_runs") == 0.0:
                out[figure] = 1.0  # Does not run on TFLM: out of budget.
                continue
            out[figure] = max(0.0, float(figures[source]) / float(limit) - 1.0)
        return out

    def figure(self, limited):
        """The trial figure a limit named by `limited` (a LIMITS figure) applies to."""
        if self.int8 and limited in ("latency_us", "file_bytes"):
            return f"int8_{limited}"
        return limited


def objective(val_accuracy, excess):
    """The score of a trial (see the module docstring).

    Args:
      val_accuracy: validation accuracy in [0, 1].
      excess: what :meth:`Budget.excess` returned.

    Returns:
      `val_accuracy` when every overshoot is 0, else a value below 0.
    """
    over = sum(excess.values())
    return float(val_accuracy) if over <= 0 else float(val_accuracy) - 1.0 - over


class _BudgetedDraws:
    """Oracle mixin: a random draw the budget check rejects is drawn again.

    ``budget_check`` (None = accept every draw) is a callable taking a dict of
    hyperparameter values and returning whether that candidate meets the
    budget; at most ``MAX_DRAWS`` draws are made for one trial (the last one
    is used if none passes). ``draws`` and ``rejected`` count the draws made
    and rejected; ``aim_rejected`` the ones refused for costing more than
    their target (below). The counts are oracle state: a resumed search goes
    on counting from the saved ones.

    A draw that aims at a trial (``aim`` is a trial id: ``--evolution_fitness
    =aim``) must also pass ``aim_check(values, trial id)`` (None = accept):
    cost no more than that trial. Such refusals are remembered per target
    (``aim_refused``), and the trial trained when no draw passes is a draw
    that met the budget.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_check = None
        self.aim_check = None
        self.draws = 0
        self.rejected = 0
        self.aim_rejected = 0  # Draws within the budget that cost more than their target.
        self.refused = set()  # Hashes of the draws the check rejected.
        self.aim_refused = set()  # (target trial id, hash) of draws costing more than it.

    _COUNTS = ("draws", "rejected", "aim_rejected")

    def get_state(self):
        # Saved with the oracle, so that a resumed search counts every process's draws.
        return dict(super().get_state(), draw_counts={k: getattr(self, k) for k in self._COUNTS})

    def set_state(self, state):
        super().set_state(state)
        for k in self._COUNTS:
            setattr(self, k, int(state.get("draw_counts", {}).get(k, 0)))

    def _random_values(self):
        fallback = None
        for _ in range(MAX_DRAWS):
            values = super()._random_values()
            self.draws += values is not None
            if values is None:
                return fallback
            fits = self.budget_check is None or self.budget_check(values)
            aim = getattr(self, "aim", None)
            if fits and aim is not None and self.aim_check is not None:
                if self.aim_check(values, aim):
                    return values
                fallback = values
                self.aim_rejected += 1
                self.aim_refused.add((aim, self._compute_values_hash(values)))
                continue
            if fits:
                return values
            self.rejected += 1
            self.refused.add(self._compute_values_hash(values))
        if fallback is not None:
            logging.warning(
                "No candidate in %d draws cost no more than trial %s; training one "
                "that meets the budget.",
                MAX_DRAWS,
                getattr(self, "aim", None),
            )
            return fallback
        logging.warning(
            "No candidate in %d random draws met the budget; training the last one.", MAX_DRAWS
        )
        return values


class BudgetedRandomSearchOracle(_BudgetedDraws, kt.oracles.RandomSearchOracle):
    """keras-tuner's random search, drawing within the budget (see module doc)."""


class BudgetedHyperbandOracle(_BudgetedDraws, kt.oracles.HyperbandOracle):
    """keras-tuner's Hyperband, drawing its new trials within the budget."""


def neighbours(hp, value):
    """The values one mutation step from `value` of keras-tuner hyperparameter `hp`:
    an integer +-step, an ordered numeric choice the next value down or up, a
    categorical choice any other value."""
    if isinstance(hp, kt.engine.hyperparameters.Int):
        step = hp.step or 1
        return [v for v in (value - step, value + step) if hp.min_value <= v <= hp.max_value]
    options = list(hp.values)
    if all(isinstance(v, (int, float)) for v in options):
        options = sorted(options)
        i = options.index(value)
        return [options[j] for j in (i - 1, i + 1) if 0 <= j < len(options)]
    return [v for v in options if v != value]


# How --oracle=evolution ranks a tournament: by score, by how well a trial
# covers the start points no trial covers yet (cover_keys), or by score among
# the trials that cost no more than one such start point, whose children must
# cost no more than it either ('aim': aim_target).
FITNESS = ("score", "cover", "aim")
# 'aim': which trials inside the target's cost envelope a tournament draws
# from: all of them ('envelope'), or those outside the envelope of every
# cheaper open start point ('band'; all of them when none is).
AIM_WINDOWS = ("envelope", "band")
# 'aim': a child is one neighbouring move from its parent, or two with this
# probability (a trade: e.g. one stage wider and another narrower).
TWO_MOVES = 0.5
# Hyperparameters a scale move (--evolution_scale_moves) steps all at once.
SCALED = re.compile(r"stage\d+_filters")


def cover_keys(rows):
    """Tournament keys of ``--evolution_fitness=cover``: larger is fitter.

    The start points (the hand-designed students) are the targets. A start
    point is *open* while no other trial covers it (scores at least as high
    with no more int8 bytes and no higher int8 latency,
    :func:`nas.pareto.covers`). A row aims at the open start points that cost
    no less than it (itself included, for an open start point); its key is
    ``(1, score - the lowest score among them)``, so a row that covers one
    has a margin >= 0, and the cheap rows that come closest to an open point
    win. A row that aims at none ranks below every row that aims, by score:
    ``(0, score)``.

    Args:
      rows: dicts with ``score``, ``int8_file_bytes``, ``int8_latency_us``
        (inf when not measured: such a start point is no target, such a
        row aims at none) and ``start`` (True for a start point).

    Returns:
      one (aims, margin or score) tuple per row, in order.
    """

    targets_open = [rows[i] for i in open_points(rows)]
    keys = []
    for r in rows:
        targets = [h for h in targets_open if pareto.costs_no_more(r, h)]
        if targets:
            keys.append((1, r["score"] - min(h["score"] for h in targets)))
        else:
            keys.append((0, r["score"]))
    return keys


def open_points(rows):
    """Indices of the open start points: measured (finite int8 bytes and
    latency) and covered by no trial that is neither a start point, nor a
    seed point, nor a same-cost copy of one (as high a score at no more int8
    bytes and latency, :func:`nas.pareto.covers`). A seed point is given,
    not found, and a copy (e.g. a start point with relu6 for relu,
    ``search_space.same_cost_key``) is the same int8 network trained again:
    the final step counts covers without them (``nas.final.summarize``), so
    a start point only a seed or a copy covers stays a target.

    Args:
      rows: dicts with ``score``, ``int8_file_bytes``, ``int8_latency_us``,
        ``start`` and optionally ``seed`` (True for a seed point) and
        ``copy`` (True for a same-cost copy of a start or seed point), as for
        :func:`cover_keys`.
    """

    def measured(h):
        return all(math.isfinite(h[k]) for k in ("int8_file_bytes", "int8_latency_us"))

    return [
        i
        for i, h in enumerate(rows)
        if h["start"]
        and measured(h)
        and not any(
            not r["start"]
            and not r.get("seed")
            and not r.get("copy")
            and r is not h
            and pareto.covers(r, h, accuracy_key="score")
            for r in rows
        )
    ]


def aim_target(rows, aimed):
    """The start point an ``--evolution_fitness=aim`` mutation aims at, or None.

    Among the open start points (:func:`open_points`), the one fewest trials
    have aimed at so far: every open point gets its share of trials in turn.
    (Counting the trials inside each point's cost envelope instead would
    starve all but the cheapest point: the envelopes of a family of widths
    nest, so the cheapest always holds the fewest.) Ties go to the cheaper
    point (fewer int8 bytes), then to the earlier one.

    Args:
      rows: dicts with ``score``, ``int8_file_bytes``, ``int8_latency_us``
        and ``start``, as for :func:`cover_keys`.
      aimed: per row, how many trials aimed at it.

    Returns:
      the index of the target row, or None when every start point is covered.
    """
    targets = open_points(rows)
    if not targets:
        return None
    return min(targets, key=lambda i: (aimed[i], rows[i]["int8_file_bytes"], i))


class _EvolutionDraws:
    """Oracle mixin: regularized evolution (Real et al. 2019, "Regularized
    Evolution for Image Classifier Architecture Search"), started from given
    points.

    A new trial is, in order:

    1. the next of `start_points`, then of `seed_points`, not tried yet (nor
       refused by the budget check, see :class:`_BudgetedDraws`): the start
       points are e.g. the hand-designed students, so the search starts from
       them and can only add to them, and are what 'cover' and 'aim' try to
       cover; seed points are further first trials that are no such target
       and close none (e.g. four-stage variants of the hand family: parents
       for the mutations, while a start point only a seed covers stays open,
       see :func:`open_points`; so does one only a same-cost copy of a start
       or seed point covers, e.g. the point with relu6 for relu);
    2. a random point while fewer than `population` trials have completed;
    3. otherwise a mutation of a tournament winner: `sample` of the last
       `population` completed trials are drawn, the best scoring one is the
       parent and one of its active hyperparameters moves to a neighbouring
       value (an integer by +-1, an ordered numeric choice to the next value
       up or down, a categorical choice to another value); hyperparameters
       the move activates are drawn at random, those it deactivates dropped.
       Older trials leave the population (the "regularized", aging part).
       With ``fitness='cover'`` the tournament ranks by :func:`cover_keys`
       over every completed trial instead of by score, and draws from the
       last `population` trials that aim at an open start point
       (:meth:`tournament_window`): parents are the trials that come closest to
       covering a start point nothing covers yet.
       With ``fitness='aim'`` a mutation first picks its target,
       :func:`aim_target` (the open start point the fewest trials have aimed
       at: ``aims`` maps each aimed trial to its target, and is part of the
       oracle's saved state); the tournament draws from the last `population`
       trials that cost no more than the target (the target included), the
       best score wins, and the child is one or two moves away
       (``TWO_MOVES``). ``aim`` then holds the target's trial id, and
       :class:`_BudgetedDraws` refuses a child that costs more than it
       (``aim_check``).

    With ``elite`` > 0, a window (any fitness) holds the `elite` fittest of
    its trials and the latest of the rest, `population` in all
    (:meth:`window`): aging alone can forget the best trials, and for a dear
    'aim' target the latest trials inside its envelope are mostly cheap
    children aimed at a cheaper point.

    With ``keep_seeds``, a window also holds every trial of a seed point
    among its trials (inside the target's envelope, under 'aim'), counted in
    `population`: under aging a seed leaves a target's window once `population`
    newer trials inside the same envelope have completed, whether or not a
    tournament ever drew it, and a seed's line is then bred from by luck.

    With ``aim_window='band'``, an 'aim' tournament draws only from the trials
    inside its target's envelope that are outside the envelope of every open
    start point which costs no more than the target (all trials inside when
    none is): the cheap children aimed at a cheaper point then stay in that
    point's tournaments instead of filling a dear target's window.

    Draws come from a generator seeded with the oracle's seed and its draw
    count, so one seed gives one sequence of trials.
    """

    def __init__(
        self,
        *args,
        start_points=(),
        population=8,
        sample=3,
        fitness="score",
        elite=0,
        aim_window="envelope",
        scale_moves=0.0,
        seed_points=(),
        keep_seeds=False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.start_points = [dict(p) for p in start_points]
        self.seed_points = [dict(p) for p in seed_points]
        self.keep_seeds = bool(keep_seeds)
        self.population = int(population)
        self.elite = int(elite)
        self.aim_window = aim_window
        self.scale_moves = float(scale_moves)
        self.sample = int(sample)
        self.fitness = fitness
        self.aim = None  # 'aim': the trial id the last mutation aims at.
        self.aims = {}  # 'aim': {trial id: the trial id it aimed at}
        # Per mutated trial, {trial id: {"parent": id, "moves": ['scale' or 'one']}};
        # `drawn` holds the lineage of each child drawn for the trial being
        # populated, by values hash (a budgeted draw may train any of them).
        self.parents = {}
        self.drawn = {}
        # 'aim': callable(trial ids) -> {trial id: int8 latency (us)} timing the
        # trials' int8 files together (None: each trial's own figure).
        self.latencies = None

    def populate_space(self, trial_id):
        out = super().populate_space(trial_id)
        drawn, self.drawn = self.drawn, {}
        if out.get("values") is not None:
            if self.aim is not None:
                self.aims[trial_id] = self.aim
            lineage = drawn.get(self._compute_values_hash(out["values"]))
            if lineage is not None:
                self.parents[trial_id] = lineage
        return out

    def get_state(self):
        return dict(super().get_state(), aims=dict(self.aims), parents=dict(self.parents))

    def set_state(self, state):
        super().set_state(state)
        self.aims = dict(state.get("aims", {}))
        self.parents = dict(state.get("parents", {}))

    @staticmethod
    def _is_one_of(values, points, same=lambda name, value: value):
        """Whether `values` holds every item of one of `points`, values compared
        as `same(name, value)` maps them."""
        return any(all(same(k, values.get(k)) == same(k, v) for k, v in p.items()) for p in points)

    def _is_start(self, values):
        return self._is_one_of(values, self.start_points)

    def _is_seed(self, values):
        return self._is_one_of(values, self.seed_points)

    def _is_copy(self, values):
        """Whether `values` is a same-cost copy of a start or seed point
        (``search_space.same_cost_value``), not the point itself."""
        points = self.start_points + self.seed_points
        return not self._is_one_of(values, points) and self._is_one_of(
            values, points, search_space.same_cost_value
        )

    def _rows(self, done):
        """Cost rows (see :func:`cover_keys`) of the completed trials `done`;
        under 'aim' with ``latencies`` set, their int8 files timed together."""
        rows = []
        for t in done:
            row = {}
            for k in ("int8_file_bytes", "int8_latency_us"):
                value = t.metrics.get_last_value(k)
                row[k] = math.inf if value is None else float(value)
            values = t.hyperparameters.values
            row.update(
                score=t.score,
                start=self._is_start(values),
                seed=self._is_seed(values),
                copy=self._is_copy(values),
            )
            rows.append(row)
        if self.fitness == "aim" and self.latencies is not None:
            timed = self.latencies([t.trial_id for t in done])
            for t, row in zip(done, rows):
                row["int8_latency_us"] = timed.get(t.trial_id, row["int8_latency_us"])
        return rows

    def _fitness(self, done):
        """{trial id: tournament key} of the completed trials `done`: the cover
        keys under 'cover', else the score (under 'aim' the tournament is won
        by score among the trials inside the target's cost envelope)."""
        if self.fitness != "cover":
            return {t.trial_id: t.score for t in done}
        return {t.trial_id: key for t, key in zip(done, cover_keys(self._rows(done)))}

    def _complete(self, values):
        """`values` over the space: inactive ones dropped, missing active ones drawn."""
        hps = kt.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                if hp.name in values:
                    hps.values[hp.name] = values[hp.name]
                else:
                    hps.values[hp.name] = hp.random_sample(self._seed_state)
                    self._seed_state += 1
            else:
                hps.values.pop(hp.name, None)
        return dict(hps.values)

    def tournament_window(self, done, fitness):
        """The trials a tournament draws from: a :meth:`window` of the completed
        ones; under cover fitness, of those that aim at an open start point
        (all completed ones when none aims).

        Aging alone lets a cover search drift: once the last trials all cost
        more than every open start point, no tournament can pick a parent
        that aims at one, and the search climbs by score.
        """
        pool = done
        if self.fitness == "cover":
            pool = [t for t in done if fitness[t.trial_id][0] == 1] or done
        return self.window(pool, fitness)

    def _aimed_members(self, done, fitness):
        """'aim': (target trial id, the trials a tournament draws from), or
        (None, None) when every start point is covered. `fitness` is
        :meth:`_fitness` of `done` (their scores)."""
        rows = self._rows(done)
        aimed = [sum(a == t.trial_id for a in self.aims.values()) for t in done]
        target = aim_target(rows, aimed)
        if target is None:
            return None, None
        inside = [(t, r) for t, r in zip(done, rows) if pareto.costs_no_more(r, rows[target])]
        if self.aim_window == "band":
            cheaper = [
                rows[j]
                for j in open_points(rows)
                if j != target and pareto.costs_no_more(rows[j], rows[target])
            ]
            band = [
                (t, r) for t, r in inside if not any(pareto.costs_no_more(r, c) for c in cheaper)
            ]
            inside = band or inside
        return done[target].trial_id, self.window([t for t, _ in inside], fitness)

    def window(self, trials, fitness):
        """`population` of `trials` (in trial order): with ``keep_seeds`` the
        trials of seed points first (the earliest, up to `population`), then
        the `elite` fittest by `fitness` ({trial id: key}; ties to the later
        trial), then the latest of the rest. With ``elite=0`` and no seeds
        kept, the latest ones: plain aging."""
        seeds = []
        if self.keep_seeds:
            seeds = [t for t in trials if self._is_seed(t.hyperparameters.values)]
            seeds = seeds[: self.population]
        room = self.population - len(seeds)
        others = [t for t in trials if t not in seeds]
        order = sorted(others, key=lambda t: (fitness[t.trial_id], t.trial_id))
        best = order[len(order) - min(self.elite, len(order), room) :]
        rest = [t for t in others if t not in best]
        keep = seeds + best + rest[max(0, len(rest) - (room - len(best))) :]
        return sorted(keep, key=lambda t: t.trial_id)

    def _scale(self, values, rng):
        """`values` with every active ``stage{i}_filters`` one choice up, or
        every one one choice down (the direction drawn among those in which
        every stage can move to a point not tried yet, nor refused by the
        budget or for costing more than the current target), or None when
        neither can: the caller then makes a one-hyperparameter move, so a
        search with scale moves does not run out of new points earlier."""
        hps = [hp for hp in self.hyperparameters.space if SCALED.fullmatch(hp.name)]
        hps = [hp for hp in hps if hp.name in values]
        steps = {}
        for direction in (-1, 1):
            moved = {}
            for hp in hps:
                options = sorted(hp.values)
                j = options.index(values[hp.name]) + direction
                if not 0 <= j < len(options):
                    break
                moved[hp.name] = options[j]
            else:
                point = self._complete(dict(values, **moved))
                key = self._compute_values_hash(point)
                tried = self._duplicate(point) or key in getattr(self, "refused", set())
                if moved and not tried and (self.aim, key) not in getattr(self, "aim_refused", ()):
                    steps[direction] = point
        if not steps:
            return None
        directions = sorted(steps)
        return steps[directions[rng.integers(len(directions))]]

    def _move(self, values, rng):
        """(`values` with one active hyperparameter moved to a neighbouring
        value, 'one'), or, with probability ``scale_moves``, (scaled by
        :meth:`_scale`, 'scale'); (None, None) when the draw found no move."""
        if self.scale_moves > 0 and rng.random() < self.scale_moves:
            scaled = self._scale(values, rng)
            if scaled is not None:
                return scaled, "scale"
        names = [hp for hp in self.hyperparameters.space if hp.name in values]
        for _ in range(100):
            hp = names[rng.integers(len(names))]
            moves = neighbours(hp, values[hp.name])
            if moves:
                moved = dict(values, **{hp.name: moves[rng.integers(len(moves))]})
                return self._complete(moved), "one"
        return None, None

    def _mutation(self, rng):
        done = sorted(
            (t for t in self.trials.values() if t.status == "COMPLETED" and t.score is not None),
            key=lambda t: t.trial_id,
        )
        fitness = self._fitness(done)
        members = None
        if self.fitness == "aim":
            self.aim, members = self._aimed_members(done, fitness)
        if members is None:
            members = self.tournament_window(done, fitness)
        picks = rng.choice(len(members), size=min(self.sample, len(members)), replace=False)
        parent = max((members[i] for i in sorted(picks)), key=lambda t: fitness[t.trial_id])
        refused = getattr(self, "aim_refused", set())
        for _ in range(100):
            child, kind = self._move(parent.hyperparameters.values, rng)
            moves = [kind]
            if child is not None and self.aim is not None and rng.random() < TWO_MOVES:
                child, kind = self._move(child, rng)
                moves.append(kind)
            if child is None or self._duplicate(child):
                continue
            key = self._compute_values_hash(child)
            if (self.aim, key) not in refused:
                self.drawn[key] = {"parent": parent.trial_id, "moves": moves}
                return child
        return None

    def _random_values(self):
        self.aim = None
        refused = getattr(self, "refused", set())
        for point in self.start_points + self.seed_points:
            values = self._complete(point)
            key = self._compute_values_hash(values)
            if not self._duplicate(values) and key not in refused:
                return values
        done = sum(t.status == "COMPLETED" for t in self.trials.values())
        if done < self.population:
            return super()._random_values()
        rng = np.random.default_rng([int(self.seed or 0), self._seed_state])
        self._seed_state += 1
        return self._mutation(rng)


class BudgetedEvolutionOracle(_BudgetedDraws, _EvolutionDraws, kt.oracles.RandomSearchOracle):
    """Regularized evolution from start points (``_EvolutionDraws``), drawing
    within the budget."""


def make_oracle(
    kind,
    max_trials=10,
    epochs=3,
    seed=0,
    hyperband_factor=3,
    hyperband_iterations=1,
    num_initial_points=None,
    start_points=(),
    population=8,
    sample=3,
    fitness="score",
    elite=0,
    aim_window="envelope",
    scale_moves=0.0,
    seed_points=(),
    keep_seeds=False,
):
    """One of keras-tuner's oracles (or regularized evolution), maximizing ``score``.

    Args:
      kind: one of ORACLES.
      max_trials: trials of 'random', 'bayesian' and 'evolution' (Hyperband's count follows
        from `epochs`, `hyperband_factor` and `hyperband_iterations`).
      epochs: Hyperband's ``max_epochs`` (ignored by the others).
      seed: oracle seed (0 stands for ``ZERO_SEED``: keras-tuner takes a
        seed of 0 as "draw a random seed").
      hyperband_factor: Hyperband's reduction factor (>= 2).
      hyperband_iterations: Hyperband iterations (>= 1).
      num_initial_points: random trials before Bayesian optimization starts
        modelling (default: keras-tuner's, 3 x the number of hyperparameters,
        capped by max_trials).
      start_points: 'evolution': hyperparameter values tried first.
      population: 'evolution': completed trials before mutations start, and
        the number of trials a tournament draws from (>= 1): the most recent
        ones, or see `elite`.
      sample: 'evolution': tournament size (1 <= sample <= population).
      fitness: 'evolution': how a tournament is won, one of FITNESS.
      elite: 'evolution': how many of a tournament's `population` trials
        are the fittest ones, the rest being the latest (0 <= elite <=
        population).
      aim_window: 'evolution' with fitness 'aim': one of AIM_WINDOWS, the
        trials inside the target's envelope a tournament draws from.
      scale_moves: 'evolution': the probability, in [0, 1], that a mutation
        move widens or narrows every stage at once (``_EvolutionDraws._scale``).
      seed_points: 'evolution': hyperparameter values tried after
        `start_points`, which are no 'cover' or 'aim' target.
      keep_seeds: 'evolution': every window holds the trials of `seed_points`
        among its trials (requires `seed_points`).

    Returns:
      A ``keras_tuner.Oracle``.

    Raises:
      ValueError: unknown kind or an out-of-range count.
    """
    goal = kt.Objective(OBJECTIVE, direction="max")
    # keras-tuner's Oracle replaces a falsy seed by a random one: seed 0 would
    # give another search on every run. It stands for a fixed nonzero seed.
    seed = ZERO_SEED if seed == 0 else seed
    if kind not in ORACLES:
        raise ValueError(f"Unknown oracle {kind!r}; allowed: {ORACLES}.")
    if kind == "hyperband":
        if epochs < 1 or hyperband_factor < 2 or hyperband_iterations < 1:
            raise ValueError(
                f"Hyperband needs epochs >= 1, hyperband_factor >= 2 and "
                f"hyperband_iterations >= 1; got {epochs}, {hyperband_factor}, "
                f"{hyperband_iterations}."
            )
        return BudgetedHyperbandOracle(
            goal,
            max_epochs=int(epochs),
            factor=int(hyperband_factor),
            hyperband_iterations=int(hyperband_iterations),
            seed=seed,
        )
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}.")
    if kind == "random":
        return BudgetedRandomSearchOracle(goal, max_trials=int(max_trials), seed=seed)
    if kind == "evolution":
        if not 1 <= sample <= population:
            raise ValueError(
                "Evolution needs 1 <= sample (--evolution_sample) <= population "
                f"(--evolution_population); got {sample} and {population}."
            )
        if not 0 <= elite <= population:
            raise ValueError(
                "Evolution needs 0 <= elite (--evolution_elite) <= population "
                f"(--evolution_population); got {elite} and {population}."
            )
        if fitness not in FITNESS:
            raise ValueError(
                f"--evolution_fitness={fitness}: allowed values are {', '.join(FITNESS)}."
            )
        if aim_window not in AIM_WINDOWS:
            raise ValueError(
                f"--evolution_aim_window={aim_window}: allowed values are {', '.join(AIM_WINDOWS)}."
            )
        if not 0 <= scale_moves <= 1:
            raise ValueError(
                f"--evolution_scale_moves={scale_moves}: allowed values are 0 to 1 "
                "(the probability of a scale move)."
            )
        if keep_seeds and not seed_points:
            raise ValueError(
                "--evolution_keep_seeds=true: keeps the trials of --seed_points in every "
                "tournament window, and no --seed_points were given."
            )
        return BudgetedEvolutionOracle(
            goal,
            max_trials=int(max_trials),
            seed=seed,
            start_points=start_points,
            population=population,
            sample=sample,
            fitness=fitness,
            elite=elite,
            aim_window=aim_window,
            scale_moves=scale_moves,
            seed_points=seed_points,
            keep_seeds=keep_seeds,
        )
    try:
        return kt.oracles.BayesianOptimizationOracle(
            goal,
            max_trials=int(max_trials),
            seed=seed,
            num_initial_points=min(num_initial_points, max_trials) if num_initial_points else None,
        )
    except ImportError as e:
        raise ValueError(
            f"The 'bayesian' oracle needs scikit-learn and scipy ({e}); install "
            "them or use --oracle=random or hyperband."
        ) from e


def distinct_weights(model, rng):
    """Gives every weight of `model` a distinct value, at the initializer's scale.

    Each weight becomes ``w * u + e`` with ``u ~ U(0.9, 1.1)`` and
    ``e ~ U(-0.01, 0.01)``: zero biases, unit BatchNormalization scales and
    other repeated constants become distinct (as in a trained model), while
    activations keep the magnitude the initializers give them. (Drawing
    every weight from U(0.5, 1.5) instead makes all of them positive; through
    deep blocks with squeeze-excite and hard-swish the activations then
    reach ~1e11 and int8 calibration yields scales LiteRT aborts on.)
    """
    model.set_weights(
        [
            (w * rng.uniform(0.9, 1.1, w.shape) + rng.uniform(-0.01, 0.01, w.shape)).astype(w.dtype)
            for w in model.get_weights()
        ]
    )


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """How candidates are timed in LiteRT (see ``nas.hardware``)."""

    num_runs: int = 50
    warmup: int = 10
    threads: int = 1

    def __post_init__(self):
        if self.num_runs < 1 or self.warmup < 0 or self.threads < 1:
            raise ValueError(
                f"Need num_runs >= 1, warmup >= 0, threads >= 1; got "
                f"{self.num_runs}, {self.warmup}, {self.threads}."
            )


class StudentSearch(base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials train, export and measure students.

    Args:
      hypermodel: a :class:`nas.search_space.StudentSpace`.
      oracle: from :func:`make_oracle`.
      data: a ``kd_keras.data.Dataset`` with a non-empty validation split.
      train_config: ``kd_keras.training.TrainConfig`` of every trial (its
        ``epochs`` is replaced by Hyperband's budget under Hyperband).
      batch_size: training batch size.
      augment: ``kd_keras.data.AugmentConfig`` of the training split.
      budget: :class:`Budget`.
      teacher: None (no distillation), a teacher ``keras.Model``, or a
        zero-argument callable returning one, called once at the first trial
        (a distributed worker thus loads the teacher only when it gets work).
      kd: ``kd_keras.training.KDConfig`` (default ``KDConfig()``) when a
        teacher is given.
      measure: :class:`MeasureConfig`.
      directory: keras-tuner's project directory.
      project_name: keras-tuner's project name; outputs go to
        ``directory/project_name``.
      overwrite: start afresh instead of resuming an existing project.
      verbose: Keras verbosity of each trial's training (0, 1 or 2).

    Raises:
      ValueError: a dataset without a validation split, or a bad argument.
    """

    def __init__(
        self,
        hypermodel,
        oracle,
        data,
        train_config,
        batch_size=64,
        augment=data_lib.AugmentConfig(),
        budget=Budget(),
        teacher=None,
        kd=None,
        measure=MeasureConfig(),
        directory=".",
        project_name="nas",
        overwrite=False,
        verbose=0,
    ):
        if len(data.x_val) == 0:
            raise ValueError(
                f"Dataset '{data.name}' has an empty validation split; the search "
                "ranks candidates by validation accuracy (set val_size > 0)."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
        self.data = data
        self.train_config = train_config
        self.batch_size = int(batch_size)
        self.augment = augment
        self.budget = budget
        self.kd = (kd or training.KDConfig()) if teacher is not None else None
        self.measure = measure
        self.fit_verbose = verbose
        self._teacher = teacher
        self._datasets = None
        self._timed = {}  # frozenset of trial ids -> their int8 latencies timed together
        self._last_draw = None  # (values hash, int8 flatbuffer) of the last draw measured
        super().__init__(
            oracle, hypermodel, directory=directory, project_name=project_name, overwrite=overwrite
        )
        if getattr(oracle, "fitness", None) == "aim":
            oracle.aim_check = self.costs_no_more_than
            oracle.latencies = self.trial_latencies

    # -- pieces --------------------------------------------------------------

    @property
    def datasets(self):
        """The train / val / test tf.data pipelines (built once)."""
        if self._datasets is None:
            keras.utils.set_random_seed(self.train_config.seed)  # Before the pipeline is built.
            self._datasets = data_lib.make_datasets(
                self.data, self.batch_size, self.augment, seed=self.train_config.seed
            )
        return self._datasets

    def get_teacher(self):
        """The teacher model (materialized on first use), or None without KD."""
        if self._teacher is not None and not isinstance(self._teacher, keras.Model):
            teacher = self._teacher()
            if not isinstance(teacher, keras.Model):
                raise ValueError(
                    f"The teacher callable returned {type(teacher).__name__}, not a keras.Model."
                )
            self._teacher = teacher
        return self._teacher

    def trial_model_path(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), MODEL_FILE)

    @staticmethod
    def epoch_budget(values, default_epochs):
        """(epochs the trial ends at, epochs done before, continued trial id or None).

        Hyperband trials carry ``tuner/epochs`` (cumulative target),
        ``tuner/initial_epoch`` and, when continuing a trial, ``tuner/trial_id``.
        """
        if "tuner/epochs" not in values:
            return int(default_epochs), 0, None
        target = int(values["tuner/epochs"])
        parent = values.get("tuner/trial_id")
        done = int(values.get("tuner/initial_epoch", 0)) if parent else 0
        return max(target, done + 1), done, parent

    @property
    def teacher_cache_dir(self):
        """Where the teacher cache of an augmented search lives (one per search)."""
        return os.path.join(self.project_dir, "teacher_cache")

    def train(self, model, train_config, run_dir, until_epoch=None):
        """Trains `model` in place as a trial does (teacher, KD recipe, teacher
        cache, data); resumable in `run_dir`. Returns ``training.fit``'s dict."""
        return self._fit(model, train_config, run_dir, until_epoch)

    def _fit(self, model, train_config, trial_dir, until_epoch=None):
        """Trains `model` in place; returns kd_keras.training.fit's dict."""
        teacher = self.get_teacher()
        # Without augmentation the teacher's logits are computed in memory once per
        # fit; with it and teacher_cache_views > 0, once per search (teacher cache).
        offline = self.data if teacher is not None and not self.augment.enabled else None
        return training.fit(
            model,
            self.datasets,
            train_config,
            trial_dir,
            teacher=teacher,
            kd=self.kd,
            verbose=self.fit_verbose,
            offline_data=offline,
            batch_size=self.batch_size,
            teacher_cache_dir=self.teacher_cache_dir,
            until_epoch=until_epoch,
        )

    def _cost(self, model, trial_dir):
        """(figures, excess): the measured figures of `model` (with its Keras
        parameter count) and their overshoot of the budget."""
        figures = self._measure(model, trial_dir)
        figures["params"] = int(model.count_params())
        return figures, self.budget.excess(figures)

    def _calibration_images(self):
        """The training images that calibrate every int8 conversion."""
        return self.data.x_train[:CALIBRATION_IMAGES]

    def _measure(self, model, trial_dir):
        return hardware.measure_candidate(
            model,
            self.measure.num_runs,
            self.measure.warmup,
            self.measure.threads,
            tflite_path=os.path.join(trial_dir, TRIAL_TFLITE) if trial_dir else None,
            calibration_images=self._calibration_images(),
        )

    def _measure_float(self, model):
        """The float32 figures of `model` (``hardware.float_figures``)."""
        return hardware.float_figures(
            model, self.measure.num_runs, self.measure.warmup, self.measure.threads
        )

    def _measure_int8(self, model):
        """(int8 figures, int8 flatbuffer) of `model` (``hardware.measure_int8``)."""
        return hardware.measure_int8(
            model,
            self._calibration_images(),
            self.measure.num_runs,
            self.measure.warmup,
            self.measure.threads,
        )

    def within_budget(self, values):
        """Whether the candidate of hyperparameter `values` meets the budget,
        measured on its untrained files (arena, latency and parameters do not
        depend on the weights). A candidate the converter or TFLite refuses
        does not. Only the int8 file is made, unless the budget limits the
        float32 file's latency or bytes (``Budget.int8`` False).

        Bytes do, a little: the converter stores identical constant buffers
        once, and an initialized model has many (zero biases, unit
        BatchNormalization scales). The weights are therefore replaced by
        distinct random values first (:func:`distinct_weights`), as a trained
        model's are; otherwise a draw near the byte limit passes and its
        trained file breaks it.

        The int8 file of the last draw measured is kept for
        :meth:`costs_no_more_than`, which an aimed draw calls next.
        """
        self._last_draw = None
        model = self._untrained(values)
        try:
            figures, content = self._measure_int8(model)
            self._last_draw = (self.oracle._compute_values_hash(values), content)
            if not self.budget.int8 and (self.budget.max_latency_us or self.budget.max_bytes):
                figures.update(self._measure_float(model))
        except convert_lib.ExportError as e:
            logging.info("Draw rejected: it does not convert (%s).", e)
            return False
        figures["params"] = int(model.count_params())
        excess = self.budget.excess(figures)
        if any(excess.values()):
            self._warn_if_start_point(values, figures, excess)
        return not any(excess.values())

    def _warn_if_start_point(self, values, figures, excess):
        """Says at once, in one line, when a start or seed point (a hand-designed
        student) misses the budget: it is then not trained, and a budget below
        every start point (e.g. a latency limit set on a faster machine) leaves
        the search only its random draws, which it would otherwise only report
        at its end, as no feasible trial."""
        for kind in ("start", "seed"):
            points = getattr(self.oracle, f"{kind}_points", ())
            # The oracle's own rule for "is this draw that point".
            index = [i for i, p in enumerate(points) if _EvolutionDraws._is_one_of(values, [p])]
            if not index:
                continue
            over = ", ".join(
                f"{self.budget.figure(f)} {figures[self.budget.figure(f)]:g} > "
                f"--{attr}={getattr(self.budget, attr):g}"
                for f, attr in Budget.LIMITS
                if excess.get(f)
            )
            logging.warning(
                "%s point %d of %d (--%s_points) is over the budget (%s), measured on this "
                "machine: it will not be trained. If every start point is, the budget lies "
                "below the hand-designed students here; consider relaxing it.",
                kind.capitalize(),
                index[0] + 1,
                len(points),
                kind,
                over,
            )
            return

    def _untrained(self, values):
        """The model of hyperparameter `values` with distinct random weights
        (:func:`distinct_weights`), whose files cost what a trained one's do."""
        model = self.hypermodel.build(search_space.hyperparameters_from_values(values))
        distinct_weights(model, np.random.default_rng(0))
        return model

    def _draw_int8(self, values):
        """The int8 flatbuffer of the untrained candidate `values` (distinct
        weights, as in :meth:`within_budget`), reused from :meth:`within_budget`
        when it measured this candidate last.

        Raises:
          export.convert.ExportError: the converter refused it.
        """
        last = self._last_draw
        if last is not None and last[0] == self.oracle._compute_values_hash(values):
            return last[1]
        return convert_lib.convert(
            self._untrained(values),
            "int8",
            representative_images=self._calibration_images(),
        )

    def trial_int8_path(self, trial_id):
        """Where a finished trial's int8 file is (written by :meth:`_measure`)."""
        return hardware.int8_path(os.path.join(self.get_trial_dir(trial_id), TRIAL_TFLITE))

    def _time_together(self, files):
        """{name: median int8 latency (us)} of `files` ({name: path or bytes}),
        timed interleaved in one timing process."""
        timed = measure_lib.latency_together(
            files,
            example=self.data.x_val[0],
            num_runs=self.measure.num_runs,
            warmup=self.measure.warmup,
            threads=self.measure.threads,
        )
        return {name: float(t["latency_us_median"]) for name, t in timed.items()}

    def trial_latencies(self, trial_ids):
        """{trial id: int8 latency (us)} of the finished trials `trial_ids`, their
        int8 files timed together (one timing process; remembered per set of
        trials). A trial without an int8 file is left out; when the timing
        process fails twice, every trial is (callers then use each trial's
        own figure).

        Each trial's own ``int8_latency_us`` was timed alone, when it finished;
        two such figures of one file can lie 50% apart (docs/nas_pareto), so
        comparisons of cost between trials use these instead.
        """
        key = frozenset(trial_ids)
        if key not in self._timed:
            files = {
                t: self.trial_int8_path(t)
                for t in sorted(key)
                if os.path.exists(self.trial_int8_path(t))
            }
            timed = {}
            for attempt in (1, 2):
                try:
                    timed = self._time_together(files) if files else {}
                    break
                except convert_lib.ExportError as e:
                    logging.warning("Timing the trials together failed (try %d): %s", attempt, e)
            self._timed = {key: timed}
        return dict(self._timed[key])

    def costs_no_more_than(self, values, trial_id):
        """Whether the candidate of hyperparameter `values` costs no more than
        finished trial `trial_id`: no more int8 bytes (its untrained file, with
        distinct weights as in :meth:`within_budget`) and no higher int8
        latency, the two files timed together. A candidate the converter
        refuses, or whose file the timing process cannot run, does not."""
        target = self.oracle.get_trial(trial_id).metrics.get_last_value("int8_file_bytes")
        try:
            content = self._draw_int8(values)
        except convert_lib.ExportError as e:
            logging.info("Draw rejected: it does not convert (%s).", e)
            return False
        if target is None or len(content) > target:
            return False
        try:
            timed = self._time_together({"draw": content, "target": self.trial_int8_path(trial_id)})
        except convert_lib.ExportError as e:
            # E.g. XNNPack refusing to prepare a node of an untrained file.
            logging.warning("Draw rejected: its int8 file could not be timed (%s).", e)
            return False
        return timed["draw"] <= timed["target"]

    def sample_within_budget(self):
        """Makes the oracle redraw candidates that miss the budget before any
        training (random search and Hyperband; see the module docstring).

        Returns:
          True when the oracle does so; False for an oracle that cannot (the
          Bayesian one proposes its own points) or a budget with no limit.
        """
        limits = any(getattr(self.budget, attr) for _, attr in Budget.LIMITS)
        if not limits or not isinstance(self.oracle, _BudgetedDraws):
            return False
        self.oracle.budget_check = self.within_budget
        return True

    # -- keras-tuner ---------------------------------------------------------

    def run_trial(self, trial, *args, **kwargs):
        """Builds, trains, exports and measures one candidate.

        Returns:
          dict of float metrics (METRICS), ``score`` being the objective.
        """
        del args, kwargs  # Everything a trial needs is held by the tuner.
        hp = trial.hyperparameters
        trial_dir = self.get_trial_dir(trial.trial_id)
        keras.utils.set_random_seed(self.train_config.seed)
        model = self.hypermodel.build(hp)
        target, done, parent = self.epoch_budget(hp.values, self.train_config.epochs)
        # The schedule spans the largest budget; a trial stops at its own.
        config = self.train_config
        until = target if target < config.epochs else None
        if target > config.epochs:
            config = dataclasses.replace(config, epochs=target)
        continued = parent is not None and self.continue_from(parent, trial_dir)
        if parent is not None and not continued:
            # No checkpoint to continue (a parent trained elsewhere): warm-start from
            # its weights, with a fresh schedule over the remaining epochs.
            logging.warning(
                "Trial %s: no training state of trial %s to continue; warm-starting "
                "from its weights with a new schedule.",
                trial.trial_id,
                parent,
            )
            previous = keras.models.load_model(self.trial_model_path(parent), compile=False)
            model.set_weights(previous.get_weights())
            epochs = target - done
            config = dataclasses.replace(
                config, epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs - 1)
            )
            until = None
        fit_out = self.train(model, config, trial_dir, until)
        val_accuracy = training.evaluate(model, self.datasets["val"])
        self.save_model(trial.trial_id, model)
        figures, excess = self._cost(model, trial_dir)
        metrics = dict(
            figures,
            val_accuracy=val_accuracy,
            epochs=target,
            train_time_s=round(float(fit_out["train_time_s"]), 3),
            feasible=float(not any(excess.values())),
            score=objective(val_accuracy, excess),
        )
        for figure, _ in Budget.LIMITS:
            metrics[f"over_{figure}"] = float(excess.get(figure, 0.0))
        metrics = {k: float(v) for k, v in metrics.items()}
        runs.write_json(
            os.path.join(trial_dir, "result.json"),
            {
                "trial_id": trial.trial_id,
                "hyperparameters": dict(hp.values),
                "metrics": metrics,
                "budget": dataclasses.asdict(self.budget),
                "kd": dataclasses.asdict(self.kd) if self.kd else None,
                "history": fit_out["history"],
            },
        )
        return metrics

    def continue_from(self, parent, trial_dir):
        """Copies trial `parent`'s training state into `trial_dir` (unless the
        trial already has one of its own: an interrupted continuation resumes).

        Returns:
          True when `trial_dir` now holds a state to continue.
        """
        if training.read_progress(trial_dir) is not None:
            return True
        return training.copy_state(self.get_trial_dir(parent), trial_dir)

    def on_trial_end(self, trial):
        if trial.status in (
            kt.engine.trial.TrialStatus.INVALID,
            kt.engine.trial.TrialStatus.FAILED,
        ):
            logging.warning("Trial %s failed:\n%s", trial.trial_id, trial.message)
        super().on_trial_end(trial)

    def save_model(self, trial_id, model, step=0):
        """Saves a trial's trained model atomically (temporary name, then rename)."""
        del step
        path = self.trial_model_path(trial_id)
        partial = path[: -len(".keras")] + ".partial.keras"
        model.save(partial)
        os.replace(partial, path)

    def load_model(self, trial):
        """The trained model of a finished trial."""
        return keras.models.load_model(self.trial_model_path(trial.trial_id), compile=False)
