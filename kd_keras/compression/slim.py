"""Channel slimming: removes whole output channels and rebuilds a smaller model.

    plan = plan_slim(student, fraction=0.5, criterion="l1")
    slim_student = slim_model(student, plan)      # fewer filters / units
    Distiller(slim_student, teacher).fit(...)     # the stage's fine-tuning

Unstructured pruning leaves the dense kernels of the runtime as large as they
were; removing channels makes every convolution, depthwise and dense layer
physically smaller, so the int8 file, its MACs and its latency shrink.

The functional graph is walked once. Every channel a Conv1D/2D/3D or Dense
layer creates is an *atom*; each tensor's last axis is a list of atoms:

* BatchNormalization, activations, dropout, pooling, padding, cropping and
  upsampling pass the channels of their input through;
* a DepthwiseConv2D (or DepthwiseConv1D) keeps its input's channels (with a
  depth multiplier m, input channel c becomes outputs c*m .. c*m+m-1);
* Add, Subtract, Multiply (squeeze-excite), Average, Maximum and Minimum
  couple the channels at the same position of their inputs: those are
  removed together or kept together; so do elementwise TensorFlow ops called
  on Keras tensors (``x * tf.nn.relu6(x + 3.0)``: hard-swish), which pass
  channels through when their other arguments are scalars;
* Concatenate (last axis) puts its inputs' channels side by side;
* Flatten repeats the channels once per spatial position (a Dense after it
  loses the rows of a removed channel at every position); a Reshape keeping
  the last axis passes them through, one changing it keeps its input whole.

Channels coupled with the network's input or one of its outputs (the
classifier's units) are never removed, nor are the inputs of a softmax or of
a Normalization layer (its statistics stay whole).
Coupled channels form a *candidate*; the producers coupled through any
candidate form a *group*. In each group, ``fraction`` of the candidates with
the lowest score go (at least one candidate stays; the kept count can be
rounded up to a multiple), ranked by

* 'l1': the L1 norm of the candidate's filters, summed over its producers;
* 'bn_gamma': the |gamma| of the BatchNormalizations over its channels,
  summed (network slimming); a group without BatchNormalization falls back
  to 'l1'.

A Sequential model is read as the functional model of its layers. The
slimmed model is functional and has the same layer names; each kernel keeps
the rows of its kept input channels and the columns of its kept output
channels, biases and BatchNormalization's gamma, beta, moving mean and
variance their kept entries. Anything else (subclassed models, shared layers, nested models,
other layer classes and TensorFlow ops, channels-first layouts, grouped
convolutions) is refused
by :func:`plan_slim` in one line before any weight is copied.
"""

import dataclasses
import math

import numpy as np

from kd_keras.compression import wrappers
from kd_keras.compression.config import SLIM_CRITERIA as CRITERIA
from kd_keras.keras_compat import keras

L = keras.layers

_CONVS = tuple(getattr(L, n) for n in ("Conv1D", "Conv2D", "Conv3D"))
_DEPTHWISE = tuple(getattr(L, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D") if hasattr(L, n))
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_PASS = (
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.ThresholdedReLU,
    L.Activation,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Rescaling,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
_OTHERS = (L.InputLayer, L.BatchNormalization, L.Dense, L.Concatenate, L.Flatten, L.Reshape)
SUPPORTED = tuple(
    sorted(
        {c.__name__ for c in _CONVS + _DEPTHWISE + _MERGES + _PASS + _OTHERS}
        | {"Normalization", "Softmax", "TFOpLambda"}
    )
)
# What the refusals say slim handles (SUPPORTED lists every class).
HANDLES = (
    "Conv1D/2D/3D, DepthwiseConv1D/2D, Dense, BatchNormalization, Normalization, "
    "activations (ReLU, Activation, Softmax, ...), dropout, pooling, padding, cropping, "
    "upsampling, "
    "Add/Subtract/Multiply/Average/Maximum/Minimum, Concatenate, Flatten and Reshape layers, "
    "and elementwise TensorFlow ops (x + 3.0, tf.nn.relu6, x * y, ...)"
)
_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")
# TensorFlow ops called on Keras tensors (TFOpLambda layers) that act on each
# element: with scalar constants they pass channels through, with a second
# tensor they couple channels like Add.
_ELEMENTWISE_OPS = (
    "__operators__.add",
    "math.add",
    "math.subtract",
    "math.multiply",
    "math.truediv",
    "math.divide",
    "math.maximum",
    "math.minimum",
    "math.negative",
    "math.abs",
    "math.square",
    "math.sqrt",
    "math.exp",
    "math.sigmoid",
    "math.tanh",
    "nn.relu",
    "nn.relu6",
    "nn.elu",
    "nn.leaky_relu",
    "nn.sigmoid",
    "nn.silu",
    "nn.swish",
    "clip_by_value",
)


@dataclasses.dataclass(frozen=True)
class SlimPlan:
    """Which channels a slimmed model keeps.

    Attributes:
      kept: {layer name: sorted indices of the last-axis positions of its
        output kept}, for every layer of the model.
      inputs: {layer name: [names of the layers feeding it]}.
      groups: one dict per group of coupled producers: ``layers`` (names),
        ``channels`` (removable candidates), ``kept`` (candidates kept),
        ``criterion`` (the one that ranked it).
      fraction, criterion, multiple: the settings it was made with.
    """

    kept: dict
    inputs: dict
    groups: list
    fraction: float
    criterion: str
    multiple: int

    def removed(self, model, layer_name):
        """Indices of `layer_name`'s output positions the plan removes."""
        width = _width(_functional(model).get_layer(layer_name))
        keep = set(self.kept[layer_name])
        return [i for i in range(width) if i not in keep]

    def input_kept(self, layer_name):
        """Kept positions of the (first) input of `layer_name`."""
        return self.kept[self.inputs[layer_name][0]]

    def summary(self):
        """What a run records of the plan: criterion, fraction, multiple,
        groups, removable channels and kept ones, and how many groups each
        criterion ranked (``bn_gamma`` falls back to ``l1`` in a group
        without BatchNormalization)."""
        ranked_by = {}
        for g in self.groups:
            ranked_by[g["criterion"]] = ranked_by.get(g["criterion"], 0) + 1
        return {
            "criterion": self.criterion,
            "fraction": round(float(self.fraction), 6),
            "multiple": int(self.multiple),
            "groups": len(self.groups),
            "channels": int(sum(g["channels"] for g in self.groups)),
            "kept": int(sum(g["kept"] for g in self.groups)),
            "ranked_by": ranked_by,
        }


def _functional(model):
    """A Sequential model as a functional model of the same layers (its config
    then names each layer's inputs); any other model as it is."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def _refuse(model, layer, why):
    return ValueError(
        f"slim cannot handle layer '{layer.name}' ({type(layer).__name__}) of model "
        f"'{model.name}': {why}; slim handles functional models of {HANDLES}."
    )


def _width(layer):
    shape = layer.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[-1])


def _rank(layer):
    shape = layer.output_shape
    return len(shape[0] if isinstance(shape, list) else shape)


def _graph(model):
    """{layer name: [input layer names]} from the model's config, checked."""
    config = model.get_config()
    inputs = {}
    for entry in config["layers"]:
        layer = model.get_layer(entry["name"])
        _kind(model, layer)  # Refuses other classes before reading their nodes.
        nodes = entry["inbound_nodes"]
        if len(nodes) > 1:
            raise _refuse(model, layer, f"it is called {len(nodes)} times (a shared layer)")
        sources = []
        for node in nodes:
            if node and isinstance(node[0], str):  # A TensorFlow op's one call.
                node = [node]
            for inbound in node:
                if inbound[2] != 0:
                    raise _refuse(model, layer, "it reads the second output of a layer")
                sources.append(inbound[0])
                sources += _tensor_arguments(model, layer, inbound)
        inputs[entry["name"]] = sources
    outputs = [o[0] for o in config["output_layers"]]
    return inputs, outputs


def _tensor_arguments(model, layer, inbound):
    """Layers whose outputs a TensorFlow op takes as keyword arguments (a
    Keras layer takes none); constants must be scalars."""
    kwargs = inbound[3] if len(inbound) > 3 and isinstance(inbound[3], dict) else {}
    if type(layer).__name__ != "TFOpLambda":
        return []
    names = []
    for key, value in kwargs.items():
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
            if value[2] != 0:
                raise _refuse(model, layer, "it reads the second output of a layer")
            names.append(value[0])
        elif not (value is None or isinstance(value, (int, float, str, bool))):
            raise _refuse(model, layer, f"its argument {key}={value!r} is not a scalar")
    return names


def _kind(model, layer):
    """The role of `layer` in the channel walk, or a refusal."""
    cls = type(layer)
    if isinstance(layer, keras.Model):
        raise _refuse(model, layer, "it is a nested model")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _refuse(model, layer, f"its data_format is {layer.data_format!r}")
    if cls in _CONVS:
        if getattr(layer, "groups", 1) != 1:
            raise _refuse(model, layer, f"it is a grouped convolution (groups={layer.groups})")
        return "producer"
    if cls is L.Dense:
        return "producer"
    if cls in _DEPTHWISE:
        return "depthwise"
    if cls is L.BatchNormalization:
        axis = list(np.atleast_1d(layer.axis))
        if len(axis) != 1 or axis[0] not in (-1, _rank(layer) - 1):
            raise _refuse(model, layer, f"it normalizes axis {layer.axis}, not the last one")
        return "batchnorm"
    if cls is L.Softmax or (
        cls is L.Activation and layer.get_config()["activation"] in _CHANNEL_MIXING_ACTIVATIONS
    ):
        return "fix"
    if cls is L.Normalization:  # Its statistics (weights or config) keep every channel.
        if tuple(layer.axis) not in ((-1,), (_rank(layer) - 1,)):
            raise _refuse(model, layer, f"it normalizes axis {layer.axis}, not the last one")
        return "fix"
    if cls in _PASS:
        return "pass"
    if cls in _MERGES:
        return "merge"
    if cls is L.Concatenate:
        if layer.axis not in (-1, _rank(layer) - 1):
            raise _refuse(model, layer, f"it concatenates along axis {layer.axis}")
        return "concat"
    if cls is L.Flatten:
        return "flatten"
    if cls is L.Reshape:
        return "reshape"
    if cls is L.InputLayer:
        return "input"
    if cls.__name__ == "TFOpLambda":
        function = layer.get_config().get("function")
        if function in _ELEMENTWISE_OPS:
            return "merge"
        raise _refuse(model, layer, f"it calls tf.{function}, not an elementwise op slim knows")
    raise _refuse(model, layer, "it is not a layer slim knows how to slice")


class _Atoms:
    """Union-find over channels; an atom is ('fixed',) or (producer, index)."""

    def __init__(self):
        self.parent, self.origin, self.fixed = [], [], []

    def new(self, origin, fixed=False):
        self.parent.append(len(self.parent))
        self.origin.append(origin)
        self.fixed.append(fixed)
        return len(self.parent) - 1

    def find(self, a):
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b]

    def fix(self, a):
        self.fixed[self.find(a)] = True


def _in_order(model, inputs):
    """`model`'s layers, each after the layers feeding it."""
    order, done, pending = [], set(), list(model.layers)
    while pending:
        ready = [l for l in pending if all(s in done for s in inputs[l.name])]
        if not ready:
            raise _refuse(model, pending[0], "its inputs could not be ordered")
        order += ready
        done.update(l.name for l in ready)
        pending = [l for l in pending if l.name not in done]
    return order


def _walk(model, inputs, outputs):
    """Channel maps: {layer name: [atom per last-axis position]}, and the atoms."""
    atoms, maps = _Atoms(), {}
    for layer in _in_order(model, inputs):
        kind = _kind(model, layer)
        srcs = [maps[s] for s in inputs[layer.name]]
        width = _width(layer)
        if kind == "input":
            maps[layer.name] = [atoms.new(("fixed",), True) for _ in range(width)]
        elif kind == "producer":
            maps[layer.name] = [atoms.new((layer.name, i)) for i in range(width)]
        elif kind == "depthwise":
            m = int(layer.depth_multiplier)
            maps[layer.name] = [a for a in srcs[0] for _ in range(m)]
        elif kind in ("pass", "batchnorm"):
            maps[layer.name] = list(srcs[0])
        elif kind == "fix":
            for a in srcs[0]:
                atoms.fix(a)
            maps[layer.name] = list(srcs[0])
        elif kind == "merge":
            full = [s for s in srcs if len(s) == width]
            if not full:
                raise _refuse(model, layer, "none of its inputs has its output's channels")
            for s in srcs:
                if len(s) == width:
                    for a, b in zip(full[0], s):
                        atoms.union(a, b)
                else:  # Broadcast along the channels: that input's channels stay.
                    for a in s:
                        atoms.fix(a)
            maps[layer.name] = list(full[0])
        elif kind == "concat":
            maps[layer.name] = [a for s in srcs for a in s]
        elif kind == "flatten":
            maps[layer.name] = list(srcs[0]) * (width // max(len(srcs[0]), 1))
        elif kind == "reshape":
            if len(srcs[0]) == width:
                maps[layer.name] = list(srcs[0])
            else:  # The last axis changes: its input keeps every channel.
                for a in srcs[0]:
                    atoms.fix(a)
                maps[layer.name] = [atoms.new(("fixed",), True) for _ in range(width)]
        if len(maps[layer.name]) != width:
            raise _refuse(model, layer, "its channels could not be traced to its inputs")
    for name in outputs:
        for a in maps[name]:
            atoms.fix(a)
    return maps, atoms


def _scores(model, maps, atoms, criterion):
    """({root: L1 score}, {root: gamma score}) of every candidate."""
    l1, gamma = {}, {}
    for layer in model.layers:
        if _kind(model, layer) == "producer":
            kernel = layer.kernel.numpy()
            norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            for a, n in zip(maps[layer.name], norms):
                r = atoms.find(a)
                l1[r] = l1.get(r, 0.0) + float(n)
        elif criterion == "bn_gamma" and isinstance(layer, L.BatchNormalization) and layer.scale:
            for a, g in zip(maps[layer.name], np.abs(layer.gamma.numpy())):
                r = atoms.find(a)
                gamma[r] = gamma.get(r, 0.0) + float(g)
    return l1, gamma


def _analyze(model, criterion):
    """The walk and the ranking, which do not depend on the fraction.

    Returns:
      (inputs, maps, atoms, groups): groups are (producer names, candidates
      ranked best first, the criterion that ranked them).
    """
    inputs, outputs = _graph(model)
    maps, atoms = _walk(model, inputs, outputs)
    # Candidates (roots of non-fixed atoms), grouped by the producers they couple.
    producers = {}
    for a, origin in enumerate(atoms.origin):
        r = atoms.find(a)
        if not atoms.fixed[r] and origin[0] != "fixed":
            producers.setdefault(r, set()).add(origin[0])
    layer_root = {}

    def find_layer(n):
        while layer_root.setdefault(n, n) != n:
            n = layer_root[n]
        return n

    for names in producers.values():
        first, *rest = sorted(names)
        for n in rest:
            a, b = find_layer(first), find_layer(n)
            if a != b:
                layer_root[b] = a
    by_layer = {}
    for r in sorted(producers):
        by_layer.setdefault(find_layer(min(producers[r])), []).append(r)

    l1, gamma = _scores(model, maps, atoms, criterion)
    groups = []
    for key in sorted(by_layer, key=lambda k: min(by_layer[k])):
        candidates = by_layer[key]
        use_gamma = criterion == "bn_gamma" and any(r in gamma for r in candidates)
        score = gamma if use_gamma else l1
        ranked = sorted(candidates, key=lambda r: (-score.get(r, 0.0), r))
        names = sorted({n for r in candidates for n in producers[r]})
        groups.append((names, ranked, "bn_gamma" if use_gamma else "l1"))
    return inputs, maps, atoms, groups


def _kept(n, fraction, multiple):
    """Channels a group of `n` keeps when `fraction` of them goes (at least
    one; rounded up to `multiple`, never above `n`)."""
    keep = max(1, n - int(math.floor(fraction * n + 1e-9)))
    return min(n, int(math.ceil(keep / multiple)) * multiple)


def _choose(analysis, fraction, criterion, multiple, counts=None):
    """The SlimPlan removing `fraction` of each analysed group (0 keeps all),
    or keeping ``counts[tuple(layer names)]`` channels of the groups it names."""
    inputs, maps, atoms, groups = analysis
    removed, report = set(), []
    for names, ranked, used in groups:
        n = len(ranked)
        keep = _kept(n, fraction, multiple)
        if counts is not None and tuple(names) in counts:
            keep = max(1, min(n, int(counts[tuple(names)])))
        removed.update(ranked[keep:])
        report.append({"layers": names, "channels": n, "kept": keep, "criterion": used})
    kept = {
        name: [i for i, a in enumerate(m) if atoms.find(a) not in removed]
        for name, m in maps.items()
    }
    return SlimPlan(kept, inputs, report, float(fraction), criterion, multiple)


def plan_macs(model, plan):
    """Multiply-accumulates of one example in the model `plan` would build
    (convolutions, depthwise convolutions and dense layers), without building it."""
    model = _functional(model)
    total = 0
    for layer in model.layers:
        kind = _kind(model, layer)
        if kind not in ("producer", "depthwise"):
            continue
        shape = layer.output_shape
        positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        kernel = layer.depthwise_kernel if kind == "depthwise" else layer.kernel
        window = int(np.prod(kernel.shape[:-2]))
        width = len(plan.kept[layer.name])
        if kind == "producer":
            width *= len(plan.input_kept(layer.name))
        total += window * width * positions
    return total


def plan_slim(model, fraction=0.5, criterion="l1", multiple=1, target_macs=None, counts=None):
    """Decides which channels of `model` a slimmed copy keeps.

    Args:
      model: functional (or Sequential) keras.Model without TF-MOT wrappers.
      fraction: share of each group's removable channels to remove, in (0, 1).
      criterion: one of CRITERIA ('l1' or 'bn_gamma').
      multiple: the kept channels of a group are rounded up to a multiple of
        this (>= 1; never above the group's channels).
      target_macs: if given, a share of `model`'s MACs in (0, 1): `fraction`
        is ignored and the smallest fraction (to 1e-4, by bisection) whose
        slimmed model has at most that share is used.
      counts: if given, {tuple of a group's producer names: channels it
        keeps} (a step of :func:`schedule`): those groups keep that many
        (`fraction` is then only recorded); the others follow `fraction`.

    Returns:
      a :class:`SlimPlan`.

    Raises:
      ValueError: a bad argument, a model that is not functional or holds
        TF-MOT wrappers, a layer slim cannot handle (one line naming the
        layer, its class and what slim handles), or a MACs target that
        removing channels cannot reach.
    """
    if target_macs is None:
        if not _is_number(fraction) or not 0.0 < fraction < 1.0:
            raise ValueError(f"slim_fraction must be a number in (0, 1), got {fraction!r}.")
    elif not _is_number(target_macs) or not 0.0 < target_macs < 1.0:
        raise ValueError(f"slim_target_macs must be a number in (0, 1), got {target_macs!r}.")
    model = _checked(model, criterion, multiple)
    analysis = _analyze(model, criterion)
    if target_macs is None:
        return _choose(analysis, fraction, criterion, multiple, counts)
    full = plan_macs(model, _choose(analysis, 0.0, criterion, multiple))
    return _bisect(
        model,
        analysis,
        criterion,
        multiple,
        lambda plan: plan_macs(model, plan) <= target_macs * full,
        tolerance=1e-4,
        unreachable=lambda least: (
            f"slim_target_macs={target_macs} cannot be reached on model '{model.name}': "
            f"removing channels leaves at least {plan_macs(model, least) / full:.3f} of its "
            f"{full:,} MACs (the input, the classifier and one channel per group stay)."
        ),
    )


def schedule(model, fraction, steps, multiple=1):
    """Iterative slimming: the channels each group keeps after each of `steps` steps.

    The last step keeps what one-shot slimming by `fraction` keeps; the steps
    before it shrink each group geometrically towards it (a group of n
    channels keeping k in the end keeps about ``n * (k / n) ** (i / steps)``
    after step i), each count rounded up to `multiple`.

    Args:
      model: the unslimmed functional model (its groups and sizes).
      fraction: the one-shot fraction, in (0, 1).
      steps: number of steps (>= 1).
      multiple: as :func:`plan_slim`.

    Returns:
      list of `steps` dicts {tuple of a group's producer names: channels it
      keeps}, for :func:`plan_slim`'s `counts` on the model of each step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"slim_steps must be an integer >= 1, got {steps!r}.")
    if not _is_number(fraction) or not 0.0 < fraction < 1.0:
        raise ValueError(f"slim_fraction must be a number in (0, 1), got {fraction!r}.")
    _, _, _, groups = _analyze(_functional(model), "l1")
    out = []
    for i in range(1, steps + 1):
        counts = {}
        for names, ranked, _ in groups:
            n, last = len(ranked), _kept(len(ranked), fraction, multiple)
            keep = max(last, math.ceil(n * (last / n) ** (i / steps) - 1e-9))
            counts[tuple(names)] = min(n, int(math.ceil(keep / multiple)) * multiple)
        out.append(counts)
    return out


def plan_to_fit(model, fits, criterion="l1", multiple=1, tolerance=1e-3, what="the target"):
    """The plan removing the smallest fraction of each group for which `fits` holds.

    For a target that only a built model can measure (its int8 bytes, its
    measured latency, a search's budget): `fits` is called with candidate
    plans (each distinct plan once) during a bisection on the fraction, which
    assumes that removing more never makes a fitting plan stop fitting.

    Args:
      model: functional (or Sequential) keras.Model without TF-MOT wrappers.
      fits: callable(SlimPlan) -> bool; :func:`slim_model` builds its model.
      criterion, multiple: as :func:`plan_slim`.
      tolerance: the bisection stops when the fraction is known to this.
      what: the target in words, for the error when it cannot be met.

    Returns:
      a :class:`SlimPlan` for which `fits` held.

    Raises:
      ValueError: as :func:`plan_slim`, or `what` cannot be met even when
        every group keeps one channel (one line).
    """
    model = _checked(model, criterion, multiple)
    return _bisect(
        model,
        _analyze(model, criterion),
        criterion,
        multiple,
        fits,
        tolerance,
        lambda least: (
            f"{what} cannot be reached on model '{model.name}' by removing channels: "
            "it is missed even with one channel left per group (the input and the "
            "classifier stay)."
        ),
    )


def _checked(model, criterion, multiple):
    """`model` as a functional model, once `criterion` and `multiple` are
    valid and it holds no TF-MOT wrapper (ValueError otherwise)."""
    if criterion not in CRITERIA:
        raise ValueError(f"slim_criterion must be one of {CRITERIA}, got {criterion!r}.")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"slim_multiple must be an integer >= 1, got {multiple!r}.")
    wrappers.check_plain(model, "slim")
    return _functional(model)


def _bisect(model, analysis, criterion, multiple, fits, tolerance, unreachable):
    """The smallest fraction (to `tolerance`) whose plan fits; each distinct plan tried once."""
    verdicts = {}

    def fitting(fraction):
        plan = _choose(analysis, fraction, criterion, multiple)
        key = tuple(g["kept"] for g in plan.groups)
        if key not in verdicts:
            verdicts[key] = bool(fits(plan))
        return verdicts[key], plan

    low, high = 0.0, 0.9999
    ok, least = fitting(high)
    if not ok:
        raise ValueError(unreachable(least))
    while high - low > tolerance:
        mid = (low + high) / 2
        ok, _ = fitting(mid)
        low, high = (low, mid) if ok else (mid, high)
    return fitting(high)[1]


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _sliced_config(layer, plan):
    config = layer.get_config()
    width = len(plan.kept[layer.name])
    if "filters" in config and type(layer) in _CONVS:
        config["filters"] = width
    elif type(layer) is L.Dense:
        config["units"] = width
    elif type(layer) is L.Reshape:
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (width,)
    return config


def _sliced_weights(layer, plan):
    """`layer`'s weights with the removed channels taken out, in `layer.weights` order."""
    out_keep = plan.kept[layer.name]
    srcs = plan.inputs[layer.name]
    in_keep = plan.kept[srcs[0]] if srcs else None
    sliced = []
    for var in layer.weights:
        w = var.numpy()
        attr = var.name.rsplit("/", 1)[-1].split(":")[0]
        if attr == "kernel":
            w = w.take(in_keep, axis=-2).take(out_keep, axis=-1)
        elif attr == "depthwise_kernel":
            w = w.take(in_keep, axis=-2)
        elif attr in ("bias", "gamma", "beta", "moving_mean", "moving_variance"):
            w = w.take(out_keep, axis=-1)
        elif attr in ("mean", "variance", "count"):
            pass  # Normalization: its channels are never removed.
        else:
            raise ValueError(f"slim does not know weight '{var.name}' of layer '{layer.name}'.")
        sliced.append(w)
    return sliced


def slim_model(model, plan):
    """A physically smaller copy of `model` keeping the channels `plan` keeps.

    Args:
      model: the functional keras.Model `plan` was made for (not modified).
      plan: a :class:`SlimPlan` from :func:`plan_slim`.

    Returns:
      a new functional keras.Model with the same layer names, fewer filters
      and units, and the kept weights copied.
    """

    def rebuild(layer):
        return type(layer).from_config(_sliced_config(layer, plan))

    model = _functional(model)
    slimmed = keras.models.clone_model(model, clone_function=rebuild)
    for layer in model.layers:
        if layer.weights:
            slimmed.get_layer(layer.name).set_weights(_sliced_weights(layer, plan))
    return slimmed


def with_gamma_penalty(model, l1):
    """A copy of `model` (same weights) whose BatchNormalization scales carry
    an L1 penalty ``l1 * sum(|gamma|)`` (network slimming's sparsity
    regularization), or none when `l1` is 0 (removing an earlier one).

    Trained with it, the channels a BatchNormalization can do without get a
    small |gamma|, and ranking by ``bn_gamma`` removes them. The penalty
    enters ``model.losses``, which plain ``fit`` and the Distiller add to the
    loss.
    """
    if not _is_number(l1) or l1 < 0:
        raise ValueError(f"slim_sparsity must be a number >= 0, got {l1!r}.")

    def rebuild(layer):
        config = layer.get_config()
        if isinstance(layer, L.BatchNormalization) and layer.scale:
            config["gamma_regularizer"] = keras.regularizers.L1(float(l1)) if l1 else None
        return type(layer).from_config(config)

    model = _functional(model)
    copy = keras.models.clone_model(model, clone_function=rebuild)
    copy.set_weights(model.get_weights())
    return copy


def slim(model, fraction=0.5, criterion="l1", multiple=1, target_macs=None):
    """``slim_model(model, plan_slim(model, ...))`` with the same arguments."""
    return slim_model(model, plan_slim(model, fraction, criterion, multiple, target_macs))
