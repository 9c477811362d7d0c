"""The search's oracles: keras-tuner's random search, Bayesian optimization and
Hyperband, and regularized evolution from given start points.

Random search, Hyperband and evolution draw *within the budget*
(:class:`BudgetedDraws`): a candidate's device cost (its TFLM arena, its
LiteRT latency, its parameters; its files' bytes, given weights as distinct as
trained ones) does not depend on the weights' values, so it is measured before
any training (``nas.candidate.CandidateMeasurement.within_budget``) and a draw
that misses the budget is drawn again, up to ``MAX_DRAWS`` times: the trials,
and Hyperband's rungs, are spent on candidates that can be deployed.
"""

import time

import keras_tuner as kt
import numpy as np

from kd_keras import console
from nas.objective import OBJECTIVE

ORACLES = ("random", "bayesian", "hyperband", "evolution")
# Random draws per new trial when sampling within the budget, and the seconds
# they may take (each draw builds and measures a candidate: 1-6 s).
MAX_DRAWS = 50
MAX_DRAW_SECONDS = 120.0
# The oracle seed used for seed 0 (keras-tuner would draw a random one).
ZERO_SEED = 7919


class BudgetedDraws:
    """Oracle mixin: a random draw the budget check rejects is drawn again.

    ``budget_check`` (None = accept every draw) is a callable taking a dict of
    hyperparameter values and returning whether that candidate meets the
    budget; at most ``MAX_DRAWS`` draws, for at most ``MAX_DRAW_SECONDS``, are
    made for one trial (the last one is used if none passes, said on the
    console, as are 10 and 25 misses in a row). ``draws`` and ``rejected`` count
    the draws made and rejected; they are oracle state: a resumed search goes
    on counting from the saved ones.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_check = None
        self.draws = 0
        self.rejected = 0
        self.refused = set()  # Hashes of the draws the check rejected.

    COUNTS = ("draws", "rejected")

    def get_state(self):
        # Saved with the oracle, so that a resumed search counts every process's draws.
        return dict(super().get_state(), draw_counts={k: getattr(self, k) for k in self.COUNTS})

    def set_state(self, state):
        super().set_state(state)
        for k in self.COUNTS:
            setattr(self, k, int(state.get("draw_counts", {}).get(k, 0)))

    def _random_values(self):
        values = None
        start = time.monotonic()
        for attempt in range(MAX_DRAWS):
            values = super()._random_values()
            self.draws += values is not None
            if values is None or self.budget_check is None or self.budget_check(values):
                return values
            self.rejected += 1
            self.refused.add(self._compute_values_hash(values))
            seconds = time.monotonic() - start
            if attempt + 1 in (10, 25):
                console.progress(
                    f"{attempt + 1} draws in a row missed the budget ({seconds:.0f} s; up to "
                    f"{MAX_DRAWS} draws or {MAX_DRAW_SECONDS:.0f} s per trial): a budget this "
                    "tight may leave no feasible candidate"
                )
            if seconds >= MAX_DRAW_SECONDS:
                break
        console.progress(
            f"no candidate in {attempt + 1} random draws ({time.monotonic() - start:.0f} s) met "
            "the budget; training the last one (it will be marked over budget)"
        )
        return values


class BudgetedRandomSearchOracle(BudgetedDraws, kt.oracles.RandomSearchOracle):
    """keras-tuner's random search, drawing within the budget (see module doc)."""


class BudgetedHyperbandOracle(BudgetedDraws, kt.oracles.HyperbandOracle):
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


class EvolutionDraws:
    """Oracle mixin: regularized evolution (Real et al. 2019, "Regularized
    Evolution for Image Classifier Architecture Search"), started from given
    points.

    A new trial is, in order:

    1. the next of `start_points` not tried yet (nor refused by the budget
       check, see :class:`BudgetedDraws`): e.g. the hand-designed students,
       so the search starts from them and can only add to them;
    2. a random point while fewer than `population` trials have completed;
    3. otherwise a mutation of a tournament winner: `sample` trials of the
       :meth:`window` are drawn, the best scoring one is the parent and one of
       its active hyperparameters moves to a neighbouring value
       (:func:`neighbours`); hyperparameters the move activates are drawn at
       random, those it deactivates dropped.

    The window is the last `population` completed trials (older ones leave the
    population: the "regularized", aging part); with ``elite`` > 0 it holds
    the `elite` best scoring trials and the latest of the rest, since aging
    alone can forget the best trials. Each mutated trial's parent is recorded
    in ``parents`` ({trial id: {"parent": id, "moves": ["one"]}}), saved with
    the oracle.

    Draws come from a generator seeded with the oracle's seed and its draw
    count, so one seed gives one sequence of trials.
    """

    def __init__(self, *args, start_points=(), population=8, sample=3, elite=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_points = [dict(p) for p in start_points]
        self.population = int(population)
        self.elite = int(elite)
        self.sample = int(sample)
        # `drawn` holds the lineage of each child drawn for the trial being
        # populated, by values hash (a budgeted draw may train any of them).
        self.parents = {}
        self.drawn = {}

    def populate_space(self, trial_id):
        out = super().populate_space(trial_id)
        drawn, self.drawn = self.drawn, {}
        if out.get("values") is not None:
            lineage = drawn.get(self._compute_values_hash(out["values"]))
            if lineage is not None:
                self.parents[trial_id] = lineage
        return out

    def get_state(self):
        return dict(super().get_state(), parents=dict(self.parents))

    def set_state(self, state):
        super().set_state(state)
        self.parents = dict(state.get("parents", {}))

    @staticmethod
    def is_one_of(values, points):
        """Whether `values` holds every item of one of `points` (the rule by
        which a draw is a given point)."""
        return any(all(values.get(k) == v for k, v in p.items()) for p in points)

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

    def window(self, trials):
        """`population` of `trials` (in trial order): the `elite` best scoring
        (ties to the later trial), then the latest of the rest. With
        ``elite=0``, the latest ones: plain aging."""
        order = sorted(trials, key=lambda t: (t.score, t.trial_id))
        best = order[len(order) - min(self.elite, len(order), self.population) :]
        rest = [t for t in trials if t not in best]
        keep = best + rest[max(0, len(rest) - (self.population - len(best))) :]
        return sorted(keep, key=lambda t: t.trial_id)

    def _move(self, values, rng):
        """`values` with one active hyperparameter moved to a neighbouring
        value, or None when the draw found no move."""
        names = [hp for hp in self.hyperparameters.space if hp.name in values]
        for _ in range(100):
            hp = names[rng.integers(len(names))]
            moves = neighbours(hp, values[hp.name])
            if moves:
                moved = dict(values, **{hp.name: moves[rng.integers(len(moves))]})
                return self._complete(moved)
        return None

    def _mutation(self, rng):
        done = sorted(
            (t for t in self.trials.values() if t.status == "COMPLETED" and t.score is not None),
            key=lambda t: t.trial_id,
        )
        members = self.window(done)
        picks = rng.choice(len(members), size=min(self.sample, len(members)), replace=False)
        parent = max((members[i] for i in sorted(picks)), key=lambda t: t.score)
        for _ in range(100):
            child = self._move(parent.hyperparameters.values, rng)
            if child is None or self._duplicate(child):
                continue
            self.drawn[self._compute_values_hash(child)] = {
                "parent": parent.trial_id,
                "moves": ["one"],
            }
            return child
        return None

    def _random_values(self):
        refused = getattr(self, "refused", set())
        for point in self.start_points:
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


class BudgetedEvolutionOracle(BudgetedDraws, EvolutionDraws, kt.oracles.RandomSearchOracle):
    """Regularized evolution from start points (:class:`EvolutionDraws`),
    drawing within the budget."""


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
    elite=0,
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
      start_points: 'evolution': hyperparameter values tried first (e.g. the
        hand-designed students, ``nas.space.start_points``).
      population: 'evolution': completed trials before mutations start, and
        the number of trials a tournament draws from (>= 1): the most recent
        ones, or see `elite`.
      sample: 'evolution': tournament size (1 <= sample <= population).
      elite: 'evolution': how many of a tournament's `population` trials
        are the fittest ones, the rest being the latest (0 <= elite <=
        population).

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
        return BudgetedEvolutionOracle(
            goal,
            max_trials=int(max_trials),
            seed=seed,
            start_points=start_points,
            population=population,
            sample=sample,
            elite=elite,
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
