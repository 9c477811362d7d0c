"""Arrays in an ``.npz`` file (``--dataset=npz:PATH``): inputs that need not
be photos, such as MFCC frames for keyword spotting or sensor windows.

The file (``numpy.savez`` or ``savez_compressed``) holds

* ``x_train``, ``y_train``, ``x_test``, ``y_test``, and optionally ``x_val``
  and ``y_val`` (else validation is carved from train, like every dataset)
  and ``class_names`` (strings, one per class);
* inputs of shape (N, H, W, C) — a vector or a sequence takes a channel or a
  unit axis, e.g. (N, 49, 10, 1) — all of one dtype: ``uint8`` (images in
  [0, 255], divided by 255 like every image) or ``float32`` (used exactly as
  given: :func:`kd_keras.data.preprocess` leaves floats unchanged in training,
  teacher outputs, export calibration and accuracy);
* labels: integers in [0, classes), classes = ``len(class_names)`` or else
  the largest label + 1 (at least 2).

:func:`describe` reads only the arrays' headers and the labels, so a run's
configuration is checked without loading the inputs. An npz whose inputs are
not images (float32, or other than 1 or 3 channels) refuses the augmentations
that move pixels (crop, flip; ``Dataset.image_like``).
"""

import os
import zipfile

import numpy as np

from kd_keras.data.dataset import NPZ_PREFIX, DataError, Dataset

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val", "class_names")
DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))


def is_npz(name):
    """True for an ``npz:PATH`` dataset name."""
    return str(name).startswith(NPZ_PREFIX)


def npz_path(name):
    """The PATH of an ``npz:PATH`` dataset name (``~`` expanded)."""
    return os.path.expanduser(name[len(NPZ_PREFIX) :])


def _headers(path):
    """{key: (shape, dtype)} of the arrays of an .npz, from their headers."""
    if not os.path.isfile(path):
        raise DataError(f"npz file {path} does not exist.")
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f)
                out[info.filename[: -len(".npy")]] = (tuple(shape), np.dtype(dtype))
            return out
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DataError(f"{path} is not an .npz file ({type(e).__name__}: {e}).") from None


def describe(path):
    """What an .npz holds, checked, without loading its inputs.

    Returns:
      dict: input_shape (H, W, C), dtype, num_classes, class_names, sizes
      {split: examples}, has_val.

    Raises:
      DataError: a missing file or key, inputs not (N, H, W, C) of one
        dtype and shape, lengths that differ, labels not integers in range.
    """
    headers = _headers(path)
    missing = [k for k in REQUIRED if k not in headers]
    if ("x_val" in headers) != ("y_val" in headers):
        missing.append("y_val" if "x_val" in headers else "x_val")
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}; an npz dataset holds x_train, y_train, x_test, "
            f"y_test (optional: x_val with y_val, class_names); it has {sorted(headers)}."
        )
    splits = ("train", "test") + (("val",) if "x_val" in headers else ())
    shape, dtype = headers["x_train"]
    if len(shape) != 4:
        raise DataError(
            f"{path}: x_train has shape {shape}; inputs must be (N, H, W, C), e.g. "
            "(N, 49, 10, 1) for MFCC frames: add the missing axes with x[..., None]."
        )
    if dtype not in DTYPES:
        raise DataError(
            f"{path}: x_train is {dtype}; inputs must be uint8 (images in [0, 255]) or "
            "float32 (used as given)."
        )
    sizes = {}
    for split in splits:
        x_shape, x_dtype = headers[f"x_{split}"]
        y_shape, y_dtype = headers[f"y_{split}"]
        if x_shape[1:] != shape[1:] or x_dtype != dtype:
            raise DataError(
                f"{path}: x_{split} is {x_dtype} of shape {x_shape}, x_train {dtype} of shape "
                f"{shape}; every split's inputs must have one dtype and example shape."
            )
        if len(y_shape) != 1 or y_shape[0] != x_shape[0] or y_dtype.kind not in "iu":
            raise DataError(
                f"{path}: y_{split} is {y_dtype} of shape {y_shape} for {x_shape[0]} inputs; "
                f"it must hold one integer label per example, shape ({x_shape[0]},)."
            )
        sizes[split] = x_shape[0]
    if not sizes["train"] or not sizes["test"]:
        raise DataError(f"{path}: x_train and x_test must hold examples; sizes {sizes}.")
    with np.load(path, allow_pickle=False) as arrays:
        labels = {split: arrays[f"y_{split}"] for split in splits}
        names = _class_names(path, arrays) if "class_names" in headers else None
    top = max(int(y.max()) for y in labels.values() if len(y))
    low = min(int(y.min()) for y in labels.values() if len(y))
    classes = len(names) if names is not None else top + 1
    if low < 0 or top >= classes:
        bad = low if low < 0 else top
        raise DataError(
            f"{path}: label {bad} is out of range; labels must lie in [0, {classes}) "
            + ("(one per class name)." if names is not None else "(the largest label + 1).")
        )
    if classes < 2:
        raise DataError(f"{path}: its labels give {classes} class; at least 2 are needed.")
    return {
        "input_shape": tuple(int(d) for d in shape[1:]),
        "dtype": dtype,
        "num_classes": classes,
        "class_names": tuple(names) if names is not None else tuple(map(str, range(classes))),
        "sizes": sizes,
        "has_val": "val" in splits,
    }


def _class_names(path, arrays):
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(
            f"{path}: class_names is {names.dtype} of shape {names.shape}; give a 1-D array "
            "of strings, one per class."
        )
    return [str(n) for n in names]


def placeholder(name):
    """An empty Dataset with the npz's example shape, dtype and classes."""
    info = describe(npz_path(name))
    x = np.zeros((0,) + info["input_shape"], info["dtype"])
    y = np.zeros((0,), np.int64)
    return Dataset(name, x, y, x, y, x, y, info["num_classes"], info["class_names"])


def read(name):
    """(x_train, y_train, x_val or None, y_val or None, x_test, y_test, info)
    of an npz dataset, checked (:func:`describe`); float inputs must be finite.

    Raises:
      DataError: as :func:`describe`, or non-finite float inputs.
    """
    path = npz_path(name)
    info = describe(path)
    out = []
    with np.load(path, allow_pickle=False) as arrays:
        for split in ("train", "val", "test"):
            if split == "val" and not info["has_val"]:
                out += [None, None]
                continue
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].astype(np.int64)
            if x.dtype.kind == "f" and not np.isfinite(x).all():
                raise DataError(f"{path}: x_{split} holds NaN or infinite values.")
            out += [x, y]
    return (*out, info)
