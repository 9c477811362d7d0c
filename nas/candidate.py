"""Candidate measurement: what a student costs on the device, trained or not.

A trial's model is converted to float32 and int8 TFLite and measured in
LiteRT (latency, bytes) and TensorFlow Lite Micro (arena bytes)
(``nas.hardware``). A candidate's cost does not depend on its weights' values,
so an untrained draw, given weights as distinct as trained ones
(:func:`distinct_weights`), is measured before training to keep a search
within its budget (:meth:`CandidateMeasurement.within_budget`). Trials' int8
files can be timed again together (:meth:`CandidateMeasurement.trial_latencies`),
since two timings of one file in separate processes can lie far apart.
"""

import dataclasses
import logging
import os

import numpy as np

from export import convert as convert_lib
from export import measure as measure_lib
from nas import hardware, oracles
from nas import space as search_space

# Training images that calibrate each candidate's int8 file (its TFLM arena).
CALIBRATION_IMAGES = 64
# A trial's float32 file in its directory; its int8 file is beside it
# (nas.hardware.int8_path).
TRIAL_TFLITE = "model.tflite"


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


class CandidateMeasurement:
    """Tuner mixin: measures candidates. Needs ``self.data`` (its training
    images calibrate int8, its first validation image times the files),
    ``self.measure`` (:class:`MeasureConfig`), ``self.budget``
    (:class:`nas.objective.Budget`), ``self.hypermodel``, ``self.oracle`` and
    ``self.get_trial_dir``; ``self._timed`` caches joint timings.
    """

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
        """
        model = self._untrained(values)
        try:
            figures, excess = self.budget_figures(model)
        except convert_lib.ExportError as e:
            logging.info("Draw rejected: it does not convert (%s).", e)
            return False
        if any(excess.values()):
            self._warn_if_start_point(values, figures, excess)
        return not any(excess.values())

    def budget_figures(self, model):
        """(figures, excess): what the budget limits of `model` (its files as
        :meth:`within_budget` makes them: the int8 file, and the float32 one
        when the budget limits it; its parameters) and their overshoot.

        Raises:
          export.convert.ExportError: the converter or TFLite refuses it.
        """
        figures, _ = self._measure_int8(model)
        if not self.budget.int8 and (self.budget.max_latency_us or self.budget.max_bytes):
            figures.update(self._measure_float(model))
        figures["params"] = int(model.count_params())
        return figures, self.budget.excess(figures)

    def _warn_if_start_point(self, values, figures, excess):
        """Says at once, in one line, when a start point (e.g. a hand-designed
        student) misses the budget: it is then not trained, and a budget below
        every start point (e.g. a latency limit set on a faster machine) leaves
        the search only its random draws, which it would otherwise only report
        at its end, as no feasible trial."""
        points = getattr(self.oracle, "start_points", ())
        index = [i for i, p in enumerate(points) if oracles.EvolutionDraws.is_one_of(values, [p])]
        if not index:
            return
        over = self.budget.overs(figures, excess)
        logging.warning(
            "Start point %d of %d (--start_points) is over the budget (%s), measured on this "
            "machine: it will not be trained. If every start point is, the budget lies "
            "below the hand-designed students here; consider relaxing it.",
            index[0] + 1,
            len(points),
            over,
        )

    def _untrained(self, values):
        """The model of hyperparameter `values` with distinct random weights
        (:func:`distinct_weights`), whose files cost what a trained one's do."""
        model = self.hypermodel.build(search_space.hyperparameters_from_values(values))
        distinct_weights(model, np.random.default_rng(0))
        return model

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
