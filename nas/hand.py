"""Hand-designed students of the final step (``--final_hand``): the baselines
the found students are retrained and measured against.

An item is one of

* ``FAMILY:WIDTH`` with FAMILY in ``nas.space.HAND_FAMILIES`` (``cnn:0.25``,
  ``cnn_dws:1``): a point of the search space (``nas.space.hand_point``),
  built through it (kind ``'space'``);
* ``NAME:WIDTH`` with NAME a registry student whose builder takes a width
  (``mobilenet_v2:0.35``, ``resnet8:0.5``, ``ds_cnn:1.0``; see
  :func:`registry_names`): ``kd_keras.models.build(NAME, ..., width=WIDTH)``
  for the search's input shape and class count, with the space's
  BatchNormalization momentum (``nas.space.BN_MOMENTUM``, as every searched
  point has) (kind ``'registry'``);
* the path of a saved model or ``MODULE:FUNCTION`` (a builder on
  ``PYTHONPATH`` called with the input shape and the class count): the
  user's own student (``kd_keras.models.own.build``), its architecture with
  fresh weights (kind ``'own'``).

Registry and own students are not points of the search space, so the search
never draws them; the final step retrains them with the same recipe as the
found students and chooses its best among all of them, so on validation its
choice is never worse than a listed student within the budget.
"""

import math
import os

from kd_keras import models
from kd_keras.models import own
from nas import space as search_space

KINDS = ("space", "registry", "own")


def registry_names():
    """Registry students a hand item may name with a width: the builders that
    take ``width``, except the space's own families (those are space points)."""
    return sorted(
        name
        for name in models.REGISTRY
        if "width" in models.arguments(name) and name not in search_space.HAND_FAMILIES
    )


def allowed():
    """What a hand item may be, in words (for error messages)."""
    return (
        f"FAMILY:WIDTH with FAMILY in {sorted(search_space.HAND_FAMILIES)} (a point of the "
        f"search space), NAME:WIDTH with NAME in {registry_names()}, the path of a saved "
        "model, or MODULE:FUNCTION (a builder on PYTHONPATH); WIDTH > 0"
    )


def _width(text):
    try:
        width = float(text)
    except ValueError:
        return None
    return width if width > 0 else None


def _own_name(item):
    if own.kind(item) == "builder":
        return item.replace(":", ".")
    return os.path.splitext(os.path.basename(str(item).rstrip("/")))[0]


def entries(items, space, build=False, layers=()):
    """``--final_hand`` items as final-step entries, checked.

    Args:
      items: hand items (see the module docstring).
      space: the search's ``StudentSpace`` (its points, input shape and classes).
      build: also build every registry and own student once, so one that does
        not fit the input shape or class count is refused now.
      layers: with `build`, layer names every registry and own student must
        have (the student layers of feature distillation losses).

    Returns:
      list of dicts: name, source ('hand'), kind (one of KINDS), student (the
      item), trial_id (None), values (the space values; None for registry and
      own students) and, for own students, digest (of the file or the
      builder's source).

    Raises:
      ValueError: an item of none of the forms, a space point the space
        cannot express, a builder that does not import, a missing file, a
        student that does not fit the data, or two items of one name.
    """
    out = []
    for item in items:
        item = str(item).strip()
        prefix, sep, rest = item.partition(":")
        entry = {"source": "hand", "student": item, "trial_id": None, "values": None}
        if sep and prefix in search_space.HAND_FAMILIES:
            ((name, values),) = search_space.hand_points([item], space)
            entry.update(name=name, kind="space", values=values)
        elif sep and prefix in models.REGISTRY:
            width = _width(rest)
            if width is None or prefix not in registry_names():
                raise ValueError(f"{item!r} is not a hand student: allowed are {allowed()}.")
            entry.update(name=f"{prefix}_{width:g}", kind="registry", width=width)
        elif item in models.REGISTRY:
            raise ValueError(f"{item!r} needs a width ({item}:WIDTH); allowed are {allowed()}.")
        elif own.kind(item) in ("builder", "file") and own.looks_valid(item):
            try:
                own.check(item)
                digest = own.digest(item)
            except ValueError as e:
                raise ValueError(f"{item!r}: {e}") from None
            entry.update(name=_own_name(item), kind="own", digest=digest)
        else:
            raise ValueError(f"{item!r} is not a hand student: allowed are {allowed()}.")
        if build and entry["kind"] != "space":
            names = {layer.name for layer in build_model(entry, space).layers}
            missing = [n for n in layers if n not in names]
            if missing:
                raise ValueError(
                    f"{item!r} has no layer {missing[0]!r}, which the feature distillation "
                    "loss reads (--student_layer); leave the item out or name a layer it has."
                )
        out.append(entry)
    names = [e["name"] for e in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two items name the student {twice[0]!r}; give each once.")
    return out


def _registry_args(entry):
    """(registry name, builder arguments beside the width) of a registry
    entry: the space's BatchNormalization momentum where the builder takes
    one, as every searched point has it."""
    name = entry["student"].partition(":")[0]
    if "bn_momentum" in models.arguments(name):
        return name, {"bn_momentum": search_space.BN_MOMENTUM}
    return name, {}


def build_model(entry, space):
    """The untrained model of a hand entry, for `space`'s input shape and classes.

    Raises:
      ValueError: the student cannot be built for them (naming the item).
    """
    if entry["kind"] == "space":
        return space.build(search_space.hyperparameters_from_values(entry["values"]))
    shape, classes = space.input_shape, space.num_classes
    try:
        if entry["kind"] == "registry":
            name, extra = _registry_args(entry)
            return models.build(name, shape, classes, width=entry["width"], **extra)
        return own.build(entry["student"], shape, classes)
    except ValueError as e:
        raise ValueError(
            f"{entry['student']!r} for inputs {shape}, {classes} classes: {e}"
        ) from None
    except Exception as e:  # noqa: BLE001 — a builder may fail on a small input in any way.
        raise ValueError(
            f"{entry['student']!r} cannot be built for inputs {shape} and {classes} classes "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
        ) from None


def identity(entry):
    """What a saved final row of `entry` must match to be reused: the space
    values of a space point; the item and the file's or builder's digest of
    the others."""
    if entry.get("values") is not None:
        out = {"values": entry["values"]}
    else:
        out = {"student": entry.get("student"), "digest": entry.get("digest")}
    if entry.get("slim"):  # Slimmed into the budget (nas.final.slim_into_budget).
        out["slim"] = entry["slim"]
    return out


def pipeline_flags(entry):
    """The pipeline's ``--student`` flags that train a registry or own hand
    student (None for space points and found students)."""
    kind = entry.get("kind")
    if entry.get("source") != "hand" or kind not in ("registry", "own"):
        return None
    slim = entry.get("slim")
    then = (
        # Rounded up: never fewer channels removed than the budget needed.
        f" --techniques=slim --slim_fraction={math.ceil(slim['fraction'] * 1e4) / 1e4:g} "
        f"--slim_criterion={slim['criterion']} --compress_epochs={slim['epochs']} "
        "--compress_lr_scale=1"
        if slim
        else ""
    )
    if kind == "registry":
        name, extra = _registry_args(entry)
        args = f"width={entry['student'].partition(':')[2]}"
        args += "".join(f",{key}={value}" for key, value in extra.items())
        return f"--student={name} --student_args={args}{then}"
    return f"--student={entry['student']}{then}"


def describe(entry):
    """The table's word for where a row comes from: 'search', 'hand' (a
    space point), 'hand (registry)' or 'hand (own)'; ', slimmed' is added
    for a hand student slimmed into the budget ('hand (registry, slimmed)')."""
    kind = entry.get("kind", "space")
    slimmed = ", slimmed" if entry.get("slim") else ""
    if entry.get("source") != "hand" or (kind == "space" and not slimmed):
        return entry.get("source")
    return f"hand ({kind}{slimmed})"
