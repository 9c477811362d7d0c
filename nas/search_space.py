"""The search space: a keras-tuner ``HyperModel`` over student CNNs.

Every point is a functional ``tf_keras`` model from an ``image`` input to
``logits`` built only from ``Conv2D``, ``DepthwiseConv2D``,
``BatchNormalization``, ``ReLU``, ``MaxPooling2D``, ``GlobalAveragePooling2D``,
``Dense`` and ``Dropout``, so TF-MOT wraps it and the TFLite converter turns
every layer into a builtin op. The architecture::

    image -> stage 1 .. stage S -> gap -> [head Dense + ReLU] -> [dropout] -> logits

Stage ``i`` holds ``stage{i}_blocks`` blocks of ``stage{i}_filters`` channels.
Every stage after the first starts by halving the resolution: a 2x2
``MaxPooling2D`` (``downsample='maxpool'``) or stride 2 in its first block's
spatial convolution (``'strided'``). A block is either

* ``standard``: ``Conv2D(k x k) -> BN -> ReLU``, or
* ``separable``: ``[Conv2D 1x1 to expansion x C_in -> BN -> ReLU]`` (when
  ``expansion > 1``, MobileNetV2's expansion without the residual) then
  ``DepthwiseConv2D(k x k) -> BN -> ReLU -> Conv2D 1x1 -> BN -> ReLU``.

The very first block is always standard (a depthwise convolution over one or
three input channels does almost nothing), as in ``kd_keras.models.cnn_dws``.
The last ReLU of stage ``i`` is named ``block{i}``, the name feature
distillation losses look for in students.

Hyperparameters (names as recorded by keras-tuner): ``stages``,
``stage{i}_filters``, ``stage{i}_blocks`` (active only when ``stages >= i``),
``conv``, ``kernel_size``, ``expansion`` (active only when ``conv ==
'separable'``), ``downsample``, ``head_units`` (0 = no hidden layer),
``dropout``.
"""

import json
import os

import keras_tuner as kt

from kd_keras.keras_compat import keras

layers = keras.layers

CONV_TYPES = ("standard", "separable")
DOWNSAMPLING = ("maxpool", "strided")
ALLOWED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "MaxPooling2D",
    "GlobalAveragePooling2D",
    "Dense",
    "Dropout",
)
BEST_HPS_FILE = "best_hyperparameters.json"
# Trials train for a few hundred steps: with Keras' default momentum (0.99) the
# moving statistics are still far from the batch statistics then, and the
# model evaluates near chance in inference mode. 0.9 settles in tens of steps.
BN_MOMENTUM = 0.9

_DEFAULTS = dict(
    min_stages=2,
    max_stages=4,
    max_blocks=2,
    filters=(8, 16, 24, 32, 48, 64),
    kernel_sizes=(3, 5),
    expansions=(1, 2, 4),
    conv_types=CONV_TYPES,
    downsampling=DOWNSAMPLING,
    head_units=(0, 32, 64, 128),
    dropouts=(0.0, 0.1, 0.25),
)


def _tuple(name, value, kind):
    try:
        values = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of {kind.__name__}s, got {value!r}.") from None
    if not values:
        raise ValueError(f"{name} must not be empty.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat values, got {list(values)}.")
    return values


class StudentSpace(kt.HyperModel):
    """Search space over student CNNs for a given input shape and class count.

    Args:
      input_shape: (H, W, C) of one example.
      num_classes: number of logits (>= 2).
      min_stages: fewest stages (>= 1).
      max_stages: most stages (>= min_stages). Each stage after the first
        halves the resolution, so at most ``log2(min(H, W)) + 1`` stages fit.
      max_blocks: most blocks per stage (>= 1); each stage picks 1..max_blocks.
      filters: channel counts a stage can pick from (each >= 1).
      kernel_sizes: spatial kernel sizes (odd, >= 1).
      expansions: expansion ratios of separable blocks (each >= 1; 1 = no
        expansion convolution).
      conv_types: subset of ``CONV_TYPES``.
      downsampling: subset of ``DOWNSAMPLING``.
      head_units: widths of the hidden Dense layer before the logits (0 = none).
      dropouts: dropout rates before the logits, each in [0, 1).
      name: HyperModel name.

    Raises:
      ValueError: an argument outside what is allowed (the message names it).
    """

    def __init__(
        self,
        input_shape,
        num_classes,
        min_stages=2,
        max_stages=4,
        max_blocks=2,
        filters=_DEFAULTS["filters"],
        kernel_sizes=_DEFAULTS["kernel_sizes"],
        expansions=_DEFAULTS["expansions"],
        conv_types=CONV_TYPES,
        downsampling=DOWNSAMPLING,
        head_units=_DEFAULTS["head_units"],
        dropouts=_DEFAULTS["dropouts"],
        name="student_space",
    ):
        super().__init__(name=name)
        if len(tuple(input_shape)) != 3 or min(input_shape) < 1:
            raise ValueError(
                f"input_shape must be (H, W, C) of positive sizes, got {input_shape!r}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        if not 1 <= int(min_stages) <= int(max_stages):
            raise ValueError(
                f"Need 1 <= min_stages <= max_stages, got min_stages={min_stages}, "
                f"max_stages={max_stages}."
            )
        limit = min(self.input_shape[:2]).bit_length()  # floor(log2(min(H, W))) + 1
        if int(max_stages) > limit:
            raise ValueError(
                f"max_stages={max_stages} halves a {self.input_shape[:2]} input "
                f"below 1 pixel; at most {limit} stages fit."
            )
        if int(max_blocks) < 1:
            raise ValueError(f"max_blocks must be >= 1, got {max_blocks}.")
        self.min_stages, self.max_stages = int(min_stages), int(max_stages)
        self.max_blocks = int(max_blocks)
        self.filters = _tuple("filters", filters, int)
        self.kernel_sizes = _tuple("kernel_sizes", kernel_sizes, int)
        self.expansions = _tuple("expansions", expansions, int)
        self.conv_types = _tuple("conv_types", conv_types, str)
        self.downsampling = _tuple("downsampling", downsampling, str)
        self.head_units = _tuple("head_units", head_units, int)
        self.dropouts = _tuple("dropouts", dropouts, float)
        checks = [
            ("filters", self.filters, lambda v: v >= 1, ">= 1"),
            ("kernel_sizes", self.kernel_sizes, lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
            ("expansions", self.expansions, lambda v: v >= 1, ">= 1"),
            ("conv_types", self.conv_types, lambda v: v in CONV_TYPES, f"in {CONV_TYPES}"),
            ("downsampling", self.downsampling, lambda v: v in DOWNSAMPLING, f"in {DOWNSAMPLING}"),
            ("head_units", self.head_units, lambda v: v >= 0, ">= 0"),
            ("dropouts", self.dropouts, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ]
        for arg, values, ok, allowed in checks:
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ValueError(f"{arg} must each be {allowed}; got {list(values)} (bad: {bad}).")

    # -- keras-tuner ---------------------------------------------------------

    def build(self, hp):
        """Builds the (untrained) student that `hp` describes.

        Args:
          hp: ``keras_tuner.HyperParameters``; unknown names are registered
            with this space's choices, known ones keep their values.

        Returns:
          A functional ``keras.Model`` named ``nas_student`` producing logits.
        """
        stages = hp.Int("stages", self.min_stages, self.max_stages)
        plan = []
        for i in range(1, self.max_stages + 1):
            if i <= self.min_stages:
                f = hp.Choice(f"stage{i}_filters", list(self.filters))
                b = hp.Int(f"stage{i}_blocks", 1, self.max_blocks)
            else:
                with hp.conditional_scope("stages", list(range(i, self.max_stages + 1))):
                    f = hp.Choice(f"stage{i}_filters", list(self.filters))
                    b = hp.Int(f"stage{i}_blocks", 1, self.max_blocks)
            if i <= stages:
                plan.append((f, b))
        conv = hp.Choice("conv", list(self.conv_types))
        kernel = hp.Choice("kernel_size", list(self.kernel_sizes))
        with hp.conditional_scope("conv", ["separable"]):
            expansion = hp.Choice("expansion", list(self.expansions))
        downsample = hp.Choice("downsample", list(self.downsampling))
        head = hp.Choice("head_units", list(self.head_units))
        dropout = hp.Choice("dropout", list(self.dropouts))
        return self._model(plan, conv, kernel, expansion or 1, downsample, head, dropout)

    def _model(self, plan, conv, kernel, expansion, downsample, head, dropout):
        inputs = keras.Input(self.input_shape, name="image")
        x = inputs
        for s, (filters, blocks) in enumerate(plan, start=1):
            if s > 1 and downsample == "maxpool":
                x = layers.MaxPooling2D(2, padding="same", name=f"pool{s - 1}")(x)
            for b in range(1, blocks + 1):
                stride = 2 if (s > 1 and b == 1 and downsample == "strided") else 1
                prefix = f"s{s}b{b}"
                last = b == blocks
                if conv == "standard" or (s == 1 and b == 1):
                    x = _conv_bn_relu(x, filters, kernel, stride, prefix, s if last else None)
                else:
                    x = _separable(
                        x, filters, kernel, stride, expansion, prefix, s if last else None
                    )
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        if head:
            x = layers.Dense(head, name="head")(x)
            x = layers.ReLU(name="head_relu")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        outputs = layers.Dense(self.num_classes, name="logits")(x)
        return keras.Model(inputs, outputs, name="nas_student")

    # -- serialization -------------------------------------------------------

    def get_config(self):
        """The constructor arguments except input_shape and num_classes."""
        return dict(
            min_stages=self.min_stages,
            max_stages=self.max_stages,
            max_blocks=self.max_blocks,
            filters=list(self.filters),
            kernel_sizes=list(self.kernel_sizes),
            expansions=list(self.expansions),
            conv_types=list(self.conv_types),
            downsampling=list(self.downsampling),
            head_units=list(self.head_units),
            dropouts=list(self.dropouts),
        )

    @classmethod
    def from_config(cls, config, input_shape, num_classes):
        """Rebuilds a space from :meth:`get_config` for a given input and classes."""
        return cls(input_shape, num_classes, **config)


def _relu_name(stage):
    return None if stage is None else f"block{stage}"


def _conv_bn_relu(x, filters, kernel, stride, prefix, stage_end):
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    return layers.ReLU(name=_relu_name(stage_end) or f"{prefix}_relu")(x)


def _separable(x, filters, kernel, stride, expansion, prefix, stage_end):
    if expansion > 1:
        x = layers.Conv2D(int(x.shape[-1]) * expansion, 1, use_bias=False, name=f"{prefix}_expand")(
            x
        )
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_expand_bn")(x)
        x = layers.ReLU(name=f"{prefix}_expand_relu")(x)
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_dw_bn")(x)
    x = layers.ReLU(name=f"{prefix}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_pw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
    return layers.ReLU(name=_relu_name(stage_end) or f"{prefix}_relu")(x)


def hyperparameters_from_values(values):
    """A ``HyperParameters`` whose values are fixed to `values` (a dict)."""
    hp = kt.HyperParameters()
    hp.values.update(values)
    return hp


def load_student(path, input_shape, num_classes):
    """Rebuilds the best searched architecture, freshly initialized (untrained).

    This is what ``--student=nas:PATH`` gives the pipeline: the architecture the
    search found, to be trained from scratch (with or without distillation).

    Args:
      path: a search's project directory (``<project_dir>/<project_name>``)
        or its ``best_hyperparameters.json``.
      input_shape: (H, W, C) of the data the student will be trained on.
      num_classes: number of logits.

    Returns:
      An untrained functional ``keras.Model`` producing logits.

    Raises:
      ValueError: `path` holds no ``best_hyperparameters.json``, or the file is
        not one this package wrote.
    """
    path = os.fspath(path)
    file = os.path.join(path, BEST_HPS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise ValueError(
            f"No {BEST_HPS_FILE} at {path!r}: pass a finished search's project directory "
            "(<project_dir>/<project_name>) or the JSON file itself. A search without a "
            "feasible trial writes none."
        )
    try:
        with open(file) as f:
            saved = json.load(f)
        values, space = saved["values"], saved["search_space"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"{file} is not a best-hyperparameters file written by nas "
            f"(needs 'values' and 'search_space'): {e}"
        ) from None
    hypermodel = StudentSpace.from_config(space, input_shape, num_classes)
    return hypermodel.build(hyperparameters_from_values(values))
