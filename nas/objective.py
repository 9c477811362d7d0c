"""The search's objective: the hardware :class:`Budget` and a trial's score.

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
"""

import dataclasses

OBJECTIVE = "score"
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

    def overs(self, figures, excess):
        """The limits `figures` break, in words: ``'params 9000 > --max_params=4000'``
        (comma-separated; `excess` from :meth:`excess`)."""
        return ", ".join(
            f"{self.figure(f)} {figures[self.figure(f)]:g} > --{attr}={getattr(self, attr):g}"
            for f, attr in self.LIMITS
            if excess.get(f)
        )

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
