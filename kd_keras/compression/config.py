"""CompressionConfig: every knob of the compression chain, validated up front.

One frozen dataclass holds the settings of all techniques (channel slimming,
pruning, clustering, quantization-aware training); a technique reads only its
own fields. ``__post_init__`` checks each field on its own; cross-technique rules
(order, 2:4 with clustering, ...) live in :func:`kd_keras.compression.chain.
validate_chain`, which also knows the chain.
"""

import dataclasses

TECHNIQUES = ("slim", "prune", "cluster", "qat")
SLIM_CRITERIA = ("l1", "bn_gamma")
# Fields read only by the slim stage: left out of a chain's spec without slim
# (:func:`spec`), so the cache keys of chains without slim stay as they were.
SLIM_FIELDS = (
    "slim_fraction",
    "slim_criterion",
    "slim_multiple",
    "slim_target_macs",
    "slim_target_bytes",
    "slim_target_latency",
    "slim_steps",
    "slim_sparsity",
)
# The slim targets; at most one is set. The int8 ones need a converted model
# (export.slim_target), the MACs one does not.
SLIM_TARGETS = ("slim_target_macs", "slim_target_bytes", "slim_target_latency")
INT8_SLIM_TARGETS = ("slim_target_bytes", "slim_target_latency")
# Fields added after runs were cached: left out of a spec while at their
# default, so those runs' keys stay as they were.
_ADDED_LATER = ("slim_target_bytes", "slim_target_latency", "slim_steps", "slim_sparsity")
PRUNING_SCHEDULES = ("polynomial", "constant")
PRUNING_STRUCTURES = ("unstructured", "2:4")
CLUSTER_INITS = ("kmeans++", "linear", "density-based", "random")


def _as_names(value, field):
    """None, a comma-separated string or a sequence of layer names -> tuple or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    try:
        names = tuple(str(v).strip() for v in value)
    except TypeError:
        raise ValueError(
            f"{field} must be None, a comma-separated string or a sequence of layer "
            f"names, got {value!r}."
        ) from None
    if any(not n for n in names):
        raise ValueError(f"{field} contains an empty layer name: {value!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{field} names a layer twice: {names}.")
    return names


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
    """Settings of the compression techniques.

    Pruning steps are given as fractions of the *stage's* training steps
    (``steps_per_epoch * epochs`` of the stage that prunes), so the same config
    works for pruning from scratch and for fine-tuning a trained student.

    Attributes:
      sparsity: target fraction of zero weights in each pruned kernel, in [0, 1).
        With ``pruning_structure='2:4'`` it must be 0.5 (two of every four).
      pruning_schedule: 'polynomial' (PolynomialDecay from `initial_sparsity`
        to `sparsity` between the begin and end steps, then fine-tuning at the
        target) or 'constant' (ConstantSparsity: `sparsity` from the begin
        step on). Ignored by 2:4 pruning, whose masks TF-MOT sets once at the
        first training step.
      initial_sparsity: sparsity where the polynomial schedule starts, in
        [0, sparsity].
      pruning_structure: 'unstructured' (any weight) or '2:4' (two zeros in
        every group of four consecutive weights along the input-channel axis,
        TF-MOT ``sparsity_m_by_n=(2, 4)``).
      prune_begin_fraction: where pruning starts, as a fraction of the stage's
        steps, in [0, 1).
      prune_end_fraction: where the polynomial schedule reaches `sparsity`, as a
        fraction of the stage's steps, in (prune_begin_fraction, 1]. The rest
        of the stage fine-tunes the pruned weights. The constant schedule
        ignores it.
      pruning_frequency: steps between mask updates (TF-MOT's `frequency`);
        capped per stage so that the final mask update happens within the
        stage.
      skip_layers: layer names left unwrapped by pruning and clustering. None
        means the technique's default: pruning skips the first convolution
        and the classifier, clustering skips the first convolution.
      include_layers: if given, exactly these layers are pruned / clustered
        (instead of "all wrappable layers minus `skip_layers`").
      clusters: number of weight clusters per kernel (>= 2).
      cluster_init: centroid initialization: 'kmeans++', 'linear',
        'density-based' or 'random'.
      cluster_per_channel: cluster each output channel of a convolution
        separately (`clusters` values per channel instead of per kernel).
      slim_fraction: share of each group of coupled channels the slim stage
        removes, in (0, 1) (at least one channel of a group stays).
      slim_criterion: how slim ranks channels: 'l1' (L1 norm of the filters)
        or 'bn_gamma' (|gamma| of the BatchNormalizations over them).
      slim_multiple: slim rounds each group's kept channels up to a multiple
        of this (>= 1).
      slim_target_macs: None, or the share of the student's MACs the slimmed
        student may keep, in (0, 1): slim then finds the smallest fraction
        reaching it and ignores `slim_fraction`.
      slim_target_bytes: None, or the share of the unslimmed student's int8
        file the slimmed one may take, in (0, 1) (each candidate converted;
        ``export.slim_target``).
      slim_target_latency: None, or the share of the unslimmed student's int8
        latency the slimmed one may take, in (0, 1) (each candidate timed
        with the unslimmed file in one timing process; ``export.slim_target``).
        At most one of the three targets is set.
      slim_steps: iterative slimming: the slim stage removes `slim_fraction`
        in this many steps, each fine-tuned for its share of the stage's
        epochs (``compression.schedule``); 1 = one shot. Not with a target.
      slim_sparsity: network slimming's sparsity phase: if > 0, the slim
        stage first trains the unslimmed student with an L1 penalty of this
        weight on every BatchNormalization scale
        (``compression.with_gamma_penalty``), for its share of the stage's
        epochs, then slims it; 0 = no such phase.

    Raises:
      ValueError: a field outside its allowed values (the message names both).
    """

    sparsity: float = 0.5
    pruning_schedule: str = "polynomial"
    initial_sparsity: float = 0.0
    pruning_structure: str = "unstructured"
    prune_begin_fraction: float = 0.0
    prune_end_fraction: float = 0.75
    pruning_frequency: int = 100
    skip_layers: tuple = None
    include_layers: tuple = None
    clusters: int = 16
    cluster_init: str = "kmeans++"
    cluster_per_channel: bool = False
    slim_fraction: float = 0.5
    slim_criterion: str = "l1"
    slim_multiple: int = 1
    slim_target_macs: float = None
    slim_target_bytes: float = None
    slim_target_latency: float = None
    slim_steps: int = 1
    slim_sparsity: float = 0.0

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen dataclass
        set_("skip_layers", _as_names(self.skip_layers, "skip_layers"))
        set_("include_layers", _as_names(self.include_layers, "include_layers"))
        if self.skip_layers is not None and self.include_layers is not None:
            raise ValueError(
                f"Give skip_layers or include_layers, not both; got skip_layers="
                f"{self.skip_layers} and include_layers={self.include_layers}."
            )
        if not _is_number(self.sparsity) or not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be a number in [0, 1), got {self.sparsity!r}.")
        if self.pruning_schedule not in PRUNING_SCHEDULES:
            raise ValueError(
                f"pruning_schedule must be one of {PRUNING_SCHEDULES}, "
                f"got {self.pruning_schedule!r}."
            )
        if not _is_number(self.initial_sparsity) or not (
            0.0 <= self.initial_sparsity <= self.sparsity
        ):
            raise ValueError(
                f"initial_sparsity must be a number in [0, sparsity={self.sparsity}]"
                f", got {self.initial_sparsity!r}."
            )
        if self.pruning_structure not in PRUNING_STRUCTURES:
            raise ValueError(
                f"pruning_structure must be one of {PRUNING_STRUCTURES}, "
                f"got {self.pruning_structure!r}."
            )
        if self.pruning_structure == "2:4" and self.sparsity != 0.5:
            raise ValueError(
                f"pruning_structure='2:4' zeroes exactly two of every four weights, so "
                f"sparsity must be 0.5; got sparsity={self.sparsity}."
            )
        if not _is_number(self.prune_begin_fraction) or not 0.0 <= self.prune_begin_fraction < 1:
            raise ValueError(
                f"prune_begin_fraction must be a number in [0, 1), "
                f"got {self.prune_begin_fraction!r}."
            )
        if not _is_number(self.prune_end_fraction) or not (
            self.prune_begin_fraction < self.prune_end_fraction <= 1.0
        ):
            raise ValueError(
                f"prune_end_fraction must be a number in (prune_begin_fraction="
                f"{self.prune_begin_fraction}, 1], got {self.prune_end_fraction!r}."
            )
        if not _is_int(self.pruning_frequency) or self.pruning_frequency < 1:
            raise ValueError(
                f"pruning_frequency must be an integer >= 1, got {self.pruning_frequency!r}."
            )
        if not _is_int(self.clusters) or self.clusters < 2:
            raise ValueError(f"clusters must be an integer >= 2, got {self.clusters!r}.")
        if self.cluster_init not in CLUSTER_INITS:
            raise ValueError(
                f"cluster_init must be one of {CLUSTER_INITS}, got {self.cluster_init!r}."
            )
        if not isinstance(self.cluster_per_channel, bool):
            raise ValueError(
                f"cluster_per_channel must be a bool, got {self.cluster_per_channel!r}."
            )
        if not _is_number(self.slim_fraction) or not 0.0 < self.slim_fraction < 1.0:
            raise ValueError(
                f"slim_fraction must be a number in (0, 1), got {self.slim_fraction!r}."
            )
        if self.slim_criterion not in SLIM_CRITERIA:
            raise ValueError(
                f"slim_criterion must be one of {SLIM_CRITERIA}, got {self.slim_criterion!r}."
            )
        if not _is_int(self.slim_multiple) or self.slim_multiple < 1:
            raise ValueError(f"slim_multiple must be an integer >= 1, got {self.slim_multiple!r}.")
        for name in SLIM_TARGETS:
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not 0.0 < value < 1.0):
                raise ValueError(f"{name} must be None or a number in (0, 1), got {value!r}.")
        targets = [f"{n}={getattr(self, n)}" for n in SLIM_TARGETS if getattr(self, n) is not None]
        if len(targets) > 1:
            raise ValueError(f"Give at most one slim target, got {' and '.join(targets)}.")
        if not _is_int(self.slim_steps) or self.slim_steps < 1:
            raise ValueError(f"slim_steps must be an integer >= 1, got {self.slim_steps!r}.")
        if not _is_number(self.slim_sparsity) or self.slim_sparsity < 0:
            raise ValueError(f"slim_sparsity must be a number >= 0, got {self.slim_sparsity!r}.")
        if self.slim_steps > 1 and targets:
            raise ValueError(
                f"slim_steps={self.slim_steps} removes slim_fraction in steps; it does not "
                f"take a target (got {targets[0]}): give slim_steps=1 or no target."
            )

    def get_config(self):
        """A JSON-able dict; ``CompressionConfig.from_config(c.get_config()) == c``."""
        config = dataclasses.asdict(self)
        for key in ("skip_layers", "include_layers"):
            if config[key] is not None:
                config[key] = list(config[key])
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def spec(self, techniques):
        """The settings a run of chain `techniques` depends on, for its run spec:
        :meth:`get_config` without the slim fields when the chain has no slim
        (and without the int8 slim targets when unset)."""
        config = dataclasses.asdict(self)
        if "slim" not in techniques:
            for key in SLIM_FIELDS:
                del config[key]
        for key in _ADDED_LATER:
            if key in config and config[key] == getattr(CompressionConfig, key):
                del config[key]
        return config

    @property
    def int8_slim_target(self):
        """The int8 slim target set (``'slim_target_bytes'`` or
        ``'slim_target_latency'``), or None."""
        return next((n for n in INT8_SLIM_TARGETS if getattr(self, n) is not None), None)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)
