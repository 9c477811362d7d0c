"""The search space: a keras-tuner ``HyperModel`` over student CNNs.

Every point is a functional ``tf_keras`` model from an ``image`` input to
``logits`` built only from ALLOWED_LAYERS (convolutions, batch norm, ReLU,
pooling, ``Add``/``Multiply``/``Rescaling`` for residuals, squeeze-excite and
hard-swish, dense, dropout), so TF-MOT wraps it and the TFLite converter turns
every layer into a builtin op. The architecture::

    image -> stage 1 .. stage S -> gap -> [head Dense + ReLU] -> [dropout] -> logits

Stage ``i`` holds ``stage{i}_blocks`` blocks of ``stage{i}_filters`` channels
(widths per stage). The resolution halves once per stage after the first,
by default as each such stage starts: a 2x2 ``MaxPooling2D`` (``downsample='maxpool'``), a 2x2
``AveragePooling2D`` (``'avgpool'``), stride 2 in its first block's spatial
convolution (``'strided'``), or stride 2 into stage 2 and max-pooling before
the later stages (``'strided_first'``: the strided convolution computes
stage 2's smaller map directly instead of pooling the largest one, which is
where a pool costs most; with int8 LiteRT it made the 4 / 8 / 16 hand point
0.7 us of 9.8 us faster), or stride 2 in the very first convolution and
max-pooling before stages 3 and later (``'strided_stem'``: stages 1 and 2
both run at half the input's resolution, as after a ResNet or MobileNet
stem, and the last stage at the resolution of the other options; the full
resolution is read once, by a convolution with a quarter of the outputs).
A block is one of

* ``standard``: full ``Conv2D(k x k) -> BN -> act``;
* ``separable``: ``[Conv2D 1x1 to expansion x C_in -> BN -> act]`` (when
  ``expansion > 1``) then ``DepthwiseConv2D(k x k) -> BN -> act -> Conv2D 1x1
  -> BN -> act`` (depthwise-separable; with expansion 1 exactly the blocks of
  ``kd_keras.models.cnn_dws``);
* ``inverted``: MobileNetV2's inverted residual: ``[Conv2D 1x1 to expansion x
  C_in -> BN -> act] -> DepthwiseConv2D(k x k) -> BN -> act -> Conv2D 1x1 ->
  BN`` (linear bottleneck), plus the block's input (``Add``) when the stride
  is 1 and the channel counts agree.

The very first convolution pads its input (``stem_padding='same'``, the
hand-designed students' choice) or not (``'valid'``): a valid k x k
convolution over a 28 x 28 image computes 26 x 26 outputs for k = 3, and
every later map is smaller by as much (13, 7 and 4 pixels after 2, 3 and
4 halvings, against 14, 7 and 4). Same weights, same ops; only the pixels
at the image's border are no longer the centre of a first-layer
receptive field. Where the full-resolution first convolution dominates int8
latency (on a CPU whose int8 kernels cost about the same per output pixel
for 1 to 16 channels), that is about 14% fewer of its outputs.

``act`` is ``activation``: ``relu``, ``relu6`` or ``hard_swish`` (``x *
relu6(x + 3) / 6``, written as ``Rescaling -> ReLU(max 1) -> Multiply``).
``se`` > 0 adds squeeze-excite (``GlobalAveragePooling2D(keepdims) -> Conv2D
1x1 to max(1, C / se) -> ReLU -> Conv2D 1x1 -> sigmoid -> Multiply``) after
the spatial convolution of every block but the first (after the depthwise
one in separable and inverted blocks, as in MobileNetV3).

The very first block is always standard (a depthwise convolution over one or
three input channels does almost nothing), as in ``kd_keras.models.cnn_dws``.
The last layer of stage ``i`` is named ``block{i}``, the name feature
distillation losses look for in students.

Hand-designed points: :func:`hand_point` gives the values of
``kd_keras.models.cnn`` / ``cnn_dws`` (3 stages of (16, 32, 64) x width, one
3x3 block each, max-pooling, a same-padded first convolution, no head, no
dropout); built through the space
they have exactly the registry models' parameters and weight shapes, layer by
layer (tests/nas_test.py), whenever the space holds their values
(:meth:`StudentSpace.check_point` says which one it lacks).

Integer TFLite and TensorFlow Lite Micro: every option converts to a fully
int8 model whose ops (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D,
AVERAGE_POOL_2D, MEAN, ADD, MUL, MINIMUM, RELU, LOGISTIC, FULLY_CONNECTED,
QUANTIZE, DEQUANTIZE) all have TFLM kernels: tests/nas_test.py converts a
point with every option on to int8 and runs it on TFLM. ``relu6`` folds into
the convolutions; hard-swish does not fuse into TFLite's HARD_SWISH op (it
stays ADD, MINIMUM/RELU and MUL) and squeeze-excite costs two small
convolutions, a MEAN, a LOGISTIC and a broadcast MUL per block, which is
latency rather than a compatibility break. TF-MOT is narrower than TFLM:
its quantization-aware training refuses ``Multiply`` and ``Rescaling``
layers, so points with ``se`` > 0 or ``hard_swish`` cannot be QAT-wrapped,
and its pruning refuses ``Rescaling``, so ``hard_swish`` points cannot be
pruned either (tests/nas_test.py); post-training int8 export is unaffected.

Hyperparameters (names as recorded by keras-tuner): ``stages``,
``stage{i}_filters``, ``stage{i}_blocks`` (active only when ``stages >= i``),
``conv``, ``kernel_size``, ``expansion`` (active only when ``conv`` is
``separable`` or ``inverted``), ``downsample``, ``stem_padding`` (only in a
space that allows ``'valid'``), ``se``, ``activation``, ``head_units`` (0 =
no hidden layer), ``dropout``. ``se``, ``activation`` and ``stem_padding``
default to their first choice (0, ``relu`` and ``same``), so
best-hyperparameters files written before they existed rebuild the same
model.
"""

import json
import os

import keras_tuner as kt

from kd_keras.keras_compat import keras
from kd_keras.literals import literal
from kd_keras.models import cnn as cnn_lib

layers = keras.layers

CONV_TYPES = ("standard", "separable", "inverted")
DOWNSAMPLING = ("maxpool", "strided", "avgpool", "strided_first", "strided_stem")
STEM_PADDINGS = ("same", "valid")
ACTIVATIONS = ("relu", "relu6", "hard_swish")
# Families of kd_keras.models that are points of the space (see hand_point).
HAND_FAMILIES = {"cnn": "standard", "cnn_dws": "separable"}
ALLOWED_LAYERS = (
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "Add",
    "Multiply",
    "Rescaling",
    "Activation",
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
    stem_paddings=("same",),
    se_ratios=(0, 4),
    activations=ACTIVATIONS,
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
      expansions: expansion ratios of separable and inverted blocks (each
        >= 1; 1 = no expansion convolution).
      conv_types: subset of ``CONV_TYPES``.
      downsampling: subset of ``DOWNSAMPLING``.
      stem_paddings: subset of ``STEM_PADDINGS``: the padding of the very
        first convolution (``'valid'`` trims ``kernel - 1`` pixels from its
        output map and from every map after it). ``('same',)``, the
        default, registers no ``stem_padding`` hyperparameter: the space of
        before the option existed, draw for draw.
      se_ratios: squeeze-excite reductions (0 = no squeeze-excite; r > 0
        squeezes C channels to max(1, C // r)).
      activations: subset of ``ACTIVATIONS``.
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
        stem_paddings=_DEFAULTS["stem_paddings"],
        se_ratios=_DEFAULTS["se_ratios"],
        activations=ACTIVATIONS,
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
        self.stem_paddings = _tuple("stem_paddings", stem_paddings, str)
        self.se_ratios = _tuple("se_ratios", se_ratios, int)
        self.activations = _tuple("activations", activations, str)
        self.head_units = _tuple("head_units", head_units, int)
        self.dropouts = _tuple("dropouts", dropouts, float)
        checks = [
            ("filters", self.filters, lambda v: v >= 1, ">= 1"),
            ("kernel_sizes", self.kernel_sizes, lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
            ("expansions", self.expansions, lambda v: v >= 1, ">= 1"),
            ("conv_types", self.conv_types, lambda v: v in CONV_TYPES, f"in {CONV_TYPES}"),
            ("downsampling", self.downsampling, lambda v: v in DOWNSAMPLING, f"in {DOWNSAMPLING}"),
            (
                "stem_paddings",
                self.stem_paddings,
                lambda v: v in STEM_PADDINGS,
                f"in {STEM_PADDINGS}",
            ),
            ("se_ratios", self.se_ratios, lambda v: v >= 0, ">= 0"),
            ("activations", self.activations, lambda v: v in ACTIVATIONS, f"in {ACTIVATIONS}"),
            ("head_units", self.head_units, lambda v: v >= 0, ">= 0"),
            ("dropouts", self.dropouts, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
        ]
        for arg, values, ok, allowed in checks:
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ValueError(f"{arg} must each be {allowed}; got {list(values)} (bad: {bad}).")
        if "valid" in self.stem_paddings:
            # The valid first convolution trims kernel - 1 pixels; the stages
            # after it must still fit (see the max_stages check above).
            trimmed = min(self.input_shape[:2]) - max(self.kernel_sizes) + 1
            if trimmed < 1 or trimmed.bit_length() < self.max_stages:
                raise ValueError(
                    f"stem_paddings={list(self.stem_paddings)}: a valid {max(self.kernel_sizes)}x"
                    f"{max(self.kernel_sizes)} first convolution leaves {max(trimmed, 0)} pixels "
                    f"of a {self.input_shape[:2]} input, too few for max_stages={self.max_stages}; "
                    "allow only 'same', or fewer stages or smaller kernels."
                )

    @property
    def searches_stem_padding(self):
        """Whether ``stem_padding`` is a hyperparameter of this space: only
        when it allows more than the hand design's ``'same'``."""
        return self.stem_paddings != ("same",)

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
        expanding = [c for c in self.conv_types if c != "standard"] or ["separable"]
        with hp.conditional_scope("conv", expanding):
            expansion = hp.Choice("expansion", list(self.expansions))
        downsample = hp.Choice("downsample", list(self.downsampling))
        stem_padding = "same"
        if self.searches_stem_padding:
            stem_padding = hp.Choice("stem_padding", list(self.stem_paddings))
        block = dict(
            conv=conv,
            kernel=kernel,
            expansion=expansion or 1,
            se=hp.Choice("se", list(self.se_ratios)),
            activation=hp.Choice("activation", list(self.activations)),
        )
        head = hp.Choice("head_units", list(self.head_units))
        dropout = hp.Choice("dropout", list(self.dropouts))
        return self._model(plan, block, downsample, head, dropout, stem_padding)

    def _model(self, plan, block, downsample, head, dropout, stem_padding):
        inputs = keras.Input(self.input_shape, name="image")
        x = inputs
        for s, (filters, blocks) in enumerate(plan, start=1):
            # The stage that halves the resolution with a stride-2 convolution
            # in its first block, if any; the others (after the first) pool.
            strided = (
                (downsample == "strided" and s > 1)
                or (downsample == "strided_first" and s == 2)
                or (downsample == "strided_stem" and s == 1)
            )
            pooled = s > 2 if downsample == "strided_stem" else s > 1 and not strided
            if pooled and downsample == "avgpool":
                x = layers.AveragePooling2D(2, padding="same", name=f"pool{s - 1}")(x)
            elif pooled:
                x = layers.MaxPooling2D(2, padding="same", name=f"pool{s - 1}")(x)
            for b in range(1, blocks + 1):
                stride = 2 if (b == 1 and strided) else 1
                name = f"block{s}" if b == blocks else None
                args = dict(block, filters=filters, stride=stride, prefix=f"s{s}b{b}", name=name)
                if s == 1 and b == 1:
                    x = _block(x, **dict(args, conv="standard", se=0, padding=stem_padding))
                else:
                    x = _block(x, **args)
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        if head:
            x = layers.Dense(head, name="head")(x)
            x = layers.ReLU(name="head_relu")(x)
        if dropout:
            x = layers.Dropout(dropout, name="dropout")(x)
        outputs = layers.Dense(self.num_classes, name="logits")(x)
        return keras.Model(inputs, outputs, name="nas_student")

    # -- points --------------------------------------------------------------

    def check_point(self, values):
        """Checks that `values` is a point of this space.

        Args:
          values: {hyperparameter name: value}, e.g. from :func:`hand_point`.

        Raises:
          ValueError: naming the first hyperparameter that is missing or whose
            value the space does not allow, and what it allows; or a name in
            `values` the space does not have, or one this point does not use
            (``stage4_filters`` of a three-stage point, ``expansion`` of a
            standard one), which would build the network as if it were absent.
        """
        hp = kt.HyperParameters()
        self.build(hp)  # Registers every hyperparameter, conditional ones too.
        unused = []
        for p in hp.space:
            if not all(c.is_active(values) for c in p.conditions):
                if p.name in values:
                    unused.append(p)
                continue
            if isinstance(p, kt.engine.hyperparameters.Choice):
                allowed, ok = list(p.values), values.get(p.name) in p.values
            else:
                allowed = f"{p.min_value}..{p.max_value}"
                v = values.get(p.name)
                ok = isinstance(v, int) and p.min_value <= v <= p.max_value
            if p.name not in values or not ok:
                raise ValueError(
                    f"{p.name}={values.get(p.name)!r} is not in the search space "
                    f"(allowed: {allowed})."
                )
        names = sorted(p.name for p in hp.space)
        for name in values:
            if name not in names:
                raise ValueError(
                    f"{name!r} is not a hyperparameter of the search space "
                    f"(it has: {', '.join(names)})."
                )
        if unused:
            p = unused[0]
            needs = "; ".join(f"it needs {c.name} in {list(c.values)}" for c in p.conditions)
            raise ValueError(f"{p.name} has no effect on this point ({needs}).")

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
            stem_paddings=list(self.stem_paddings),
            se_ratios=list(self.se_ratios),
            activations=list(self.activations),
            head_units=list(self.head_units),
            dropouts=list(self.dropouts),
        )

    @classmethod
    def from_config(cls, config, input_shape, num_classes):
        """Rebuilds a space from :meth:`get_config` for a given input and classes.

        A config written before ``se_ratios``, ``activations`` and
        ``stem_paddings`` existed gets (0,), ('relu',) and ('same',): the
        space it described.
        """
        config = dict(config)
        config.setdefault("se_ratios", [0])
        config.setdefault("activations", ["relu"])
        config.setdefault("stem_paddings", ["same"])
        return cls(input_shape, num_classes, **config)


def hand_point(family, width, convs_per_block=1, stages=None):
    """The space values of a hand-designed ``kd_keras.models`` student.

    Args:
      family: a key of HAND_FAMILIES ('cnn' or 'cnn_dws').
      width: its width multiplier (stage widths round((16, 32, 64) x width),
        at least 4, as the registry builds them).
      convs_per_block: its convolutions per block (blocks per stage here).
      stages: its number of stages (default: the registry's 3). Stages past
        the third keep the third's width, e.g. ``('cnn', 0.5, stages=4)``
        has 8 / 16 / 32 / 32 channels: not a registry model, a start for
        the search (``--start_points``).

    Returns:
      dict of hyperparameter values (build with
      :func:`hyperparameters_from_values`).

    Raises:
      ValueError: unknown family or bad width.
    """
    if family not in HAND_FAMILIES:
        raise ValueError(
            f"Unknown hand-designed family {family!r}; allowed: {sorted(HAND_FAMILIES)}."
        )
    stages = len(cnn_lib.BASE_FILTERS) if stages is None else stages
    if not width > 0 or int(convs_per_block) < 1 or int(stages) < 1:
        raise ValueError(
            f"Need width > 0, convs_per_block >= 1 and stages >= 1, got {width}, "
            f"{convs_per_block}, {stages}."
        )
    values = {
        "stages": int(stages),
        "conv": HAND_FAMILIES[family],
        "kernel_size": 3,
        "downsample": "maxpool",
        "se": 0,
        "activation": "relu",
        "head_units": 0,
        "dropout": 0.0,
    }
    if family == "cnn_dws":
        values["expansion"] = 1
    for i in range(1, int(stages) + 1):
        base = cnn_lib.BASE_FILTERS[min(i, len(cnn_lib.BASE_FILTERS)) - 1]
        values[f"stage{i}_filters"] = max(4, int(round(base * width)))
        values[f"stage{i}_blocks"] = int(convs_per_block)
    return values


def parse_hand_points(items):
    """``['cnn:0.25', 'cnn_dws:1.0', ...]`` -> [(name, family, width)].

    Raises:
      ValueError: an item that is not ``FAMILY:WIDTH`` with a known family
        and a width > 0.
    """
    out = []
    for item in items:
        family, _, width = str(item).partition(":")
        try:
            w = float(width)
        except ValueError:
            w = 0.0
        if family not in HAND_FAMILIES or not w > 0:
            raise ValueError(
                f"{item!r} is not FAMILY:WIDTH with FAMILY in {sorted(HAND_FAMILIES)} and "
                "WIDTH > 0 (e.g. cnn:0.5)."
            )
        out.append((f"{family}_{w:g}", family, w))
    return out


def hand_points(items, space):
    """``FAMILY:WIDTH`` items as checked points of `space`: [(name, values)].

    Raises:
      ValueError: an item that does not parse, or a hand point the space
        cannot express (naming it and what the space allows).
    """
    return [
        (name, _checked(space, f"{family}:{width:g}", hand_point(family, width)))
        for name, family, width in parse_hand_points(items)
    ]


# Choices that leave the int8 network's ops and bytes as they are: relu6
# folds into the convolutions' fused activation as relu does, and dropout is
# gone at inference. Two points that differ only in them cost the same; the
# trained networks differ only by where relu6 clips and by training noise.
SAME_COST = {"activation": {"relu6": "relu"}, "dropout": None}


def same_cost_value(name, value):
    """Hyperparameter `name`'s `value` up to the choices of SAME_COST."""
    if name not in SAME_COST:
        return value
    mapping = SAME_COST[name]
    return None if mapping is None else mapping.get(value, value)


def same_cost_key(values):
    """A hashable identity of the int8 network `values` builds, up to the
    choices of SAME_COST: equal for a point and its same-cost copies (e.g.
    the point with relu6 for relu, or with dropout)."""
    out = {k: same_cost_value(k, v) for k, v in values.items() if not k.startswith("tuner/")}
    return json.dumps(out, sort_keys=True)


def _checked(space, item, values):
    """`values`, checked by ``space.check_point`` (the error names `item`);
    with ``stem_padding='same'`` (the hand design's) added when `space` has
    that hyperparameter and `values` do not say."""
    if space.searches_stem_padding:
        values = dict({"stem_padding": "same"}, **values)
    try:
        space.check_point(values)
    except ValueError as e:
        raise ValueError(f"{item} is not a point of the search space: {e}") from None
    return values


def start_points(items, space):
    """``FAMILY:WIDTH[:STAGES][/NAME=VALUE...]`` items (:func:`hand_point`
    with `stages`, then :func:`changed_point`'s changes if any) as checked
    points of `space`: [(name, values)], e.g. ``cnn:0.5:4`` ->
    ('cnn_0.5_4stages', 8 / 16 / 32 / 32 channels), and
    ``cnn:0.5:4/stem_padding=valid`` -> ('cnn_0.5_4stages+stem_padding-valid',
    the same with a valid first convolution): points a screen
    (``bench/nas_points.py``) found cheap on the machine at hand.

    Raises:
      ValueError: an item that does not parse, or a point the space cannot
        express (naming it and what the space allows).
    """
    return [changed_point(item, space) for item in items]


def _start_point(item, space):
    """One ``FAMILY:WIDTH[:STAGES]`` item as a checked point: (name, values)."""
    parts = str(item).split(":")
    stages = parts.pop() if len(parts) == 3 else None
    try:
        ((name, family, width),) = parse_hand_points([":".join(parts)])
        if stages is not None and not (stages.isdigit() and int(stages) >= 1):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{item!r} is not FAMILY:WIDTH[:STAGES] with FAMILY in "
            f"{sorted(HAND_FAMILIES)}, WIDTH > 0 and STAGES >= 1 (e.g. cnn:0.5:4)."
        ) from None
    if stages is not None:
        stages = int(stages)
        name = f"{name}_{stages}stages"
    return name, _checked(space, item, hand_point(family, width, stages=stages))


def changed_point(item, space):
    """``FAMILY:WIDTH[:STAGES]/NAME=VALUE/...``: a hand or start point (as
    :func:`start_points` reads it) with some hyperparameters changed, checked
    against `space`: (name, values), e.g. ``cnn:0.25/downsample=strided_stem``
    -> ('cnn_0.25+downsample-strided_stem', 4 / 8 / 16 with a strided stem).
    VALUEs are read as :func:`kd_keras.literals.literal` reads them. A
    change must name a hyperparameter the point uses
    (``StudentSpace.check_point``).

    Raises:
      ValueError: a malformed item or a point the space cannot express
        (naming the item and what the space allows).
    """
    start, *changes = str(item).split("/")
    name, values = _start_point(start, space)
    if not changes:
        return name, values
    values = dict(values)
    for change in changes:
        key, sep, text = change.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r}: {change!r} is not NAME=VALUE.")
        values[key] = literal(text)
        name += f"+{key}-{text}"
    return name, _checked(space, item, values)


def _act(x, activation, name):
    if activation == "relu":
        return layers.ReLU(name=name)(x)
    if activation == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    gate = layers.Rescaling(1.0 / 6.0, offset=0.5, name=f"{name}_hs_scale")(x)
    gate = layers.ReLU(1.0, name=f"{name}_hs_gate")(gate)
    return layers.Multiply(name=name)([x, gate])


def _bn(x, name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def _squeeze_excite(x, ratio, prefix, name=None):
    channels = int(x.shape[-1])
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_se_pool")(x)
    s = layers.Conv2D(max(1, channels // ratio), 1, name=f"{prefix}_se_reduce")(s)
    s = layers.ReLU(name=f"{prefix}_se_relu")(s)
    s = layers.Conv2D(channels, 1, name=f"{prefix}_se_expand")(s)
    s = layers.Activation("sigmoid", name=f"{prefix}_se_gate")(s)
    return layers.Multiply(name=name or f"{prefix}_se")([x, s])


def _block(
    x, conv, kernel, expansion, se, activation, filters, stride, prefix, name, padding="same"
):
    """One block (see the module docstring); its last layer is named `name`.
    `padding` is the padding of a standard block's convolution."""
    inputs = x
    end = name or f"{prefix}_out"
    if conv == "standard":
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{prefix}_conv"
        )(x)
        x = _bn(x, f"{prefix}_bn")
        if se:
            x = _act(x, activation, f"{prefix}_relu")
            return _squeeze_excite(x, se, prefix, name)
        return _act(x, activation, name or f"{prefix}_relu")
    if expansion > 1:
        x = layers.Conv2D(int(x.shape[-1]) * expansion, 1, use_bias=False, name=f"{prefix}_expand")(
            x
        )
        x = _bn(x, f"{prefix}_expand_bn")
        x = _act(x, activation, f"{prefix}_expand_relu")
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dw"
    )(x)
    x = _bn(x, f"{prefix}_dw_bn")
    x = _act(x, activation, f"{prefix}_dw_relu")
    if se:
        x = _squeeze_excite(x, se, f"{prefix}_dw")
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_pw")(x)
    if conv == "separable":
        x = _bn(x, f"{prefix}_bn")
        return _act(x, activation, name or f"{prefix}_relu")
    residual = stride == 1 and int(inputs.shape[-1]) == filters
    x = _bn(x, f"{prefix}_bn" if residual else end)
    return layers.Add(name=end)([inputs, x]) if residual else x


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
