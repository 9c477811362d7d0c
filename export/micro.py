"""A ``.tflite`` model on TensorFlow Lite Micro: arena bytes, op support, accuracy.

TFLM (the ``tflite-micro`` package) runs the model with its reference kernels
and its recording allocator. The package's Python API has no structured
accessor for the allocator's figures: ``print_allocations()`` writes them to
the native stderr. They are captured at the file-descriptor level and parsed
line by line (``[RecordingMicroAllocator] Arena allocation total N bytes``
and the per-kind ``'<kind>' used N bytes ...`` lines); a missing total is an
error, never a silent zero. The total is the smallest arena the interpreter
accepts for the model (tests check that one 16-byte step less fails).

A model that converts but needs an op TFLM does not register fails at
allocation with ``Didn't find op for builtin opcode 'OP'``; that is reported
as ``tflm_runs: False`` with the op named, not raised.
"""

import os
import re
import tempfile

import numpy as np
from tflite_micro import runtime

from export import measure as measure_lib
from export.convert import ExportError
from kd_keras import console
from kd_keras import data as data_lib

DEFAULT_ARENA_LIMIT = 64 * 1024 * 1024  # Host-side arena for measuring; the figure is what is used.

_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")
_KIND = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_CUSTOM_OP = re.compile(r"Didn't find op for custom opcode '([^']+)'")


def parse_allocations(text):
    """Figures of ``print_allocations()`` output.

    Returns:
      dict: arena_bytes (total), arena_head_bytes, arena_tail_bytes and
      arena_kinds ({kind: used bytes}).

    Raises:
      ExportError: the text holds no arena total.
    """
    total = _TOTAL.search(text)
    if total is None:
        raise ExportError(f"TFLM printed no arena total; its output was: {text.strip()[-500:]!r}")
    head, tail = _HEAD.search(text), _TAIL.search(text)
    return {
        "arena_bytes": int(total.group(1)),
        "arena_head_bytes": int(head.group(1)) if head else None,
        "arena_tail_bytes": int(tail.group(1)) if tail else None,
        "arena_kinds": {m.group(1): int(m.group(2)) for m in _KIND.finditer(text)},
    }


def missing_ops(text):
    """Op names TFLM reported it has no kernel for, in order of appearance."""
    found = _MISSING_OP.findall(text) + _CUSTOM_OP.findall(text)
    return list(dict.fromkeys(found))


def _captured(fn):
    """(fn's result or the exception it raised, native stdout+stderr text)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "tflm.txt")
        outcome = None
        with console.capture_native_output(log):
            try:
                outcome = fn()
            except (RuntimeError, ValueError) as e:
                outcome = e
        with open(log, errors="replace") as f:
            return outcome, f.read()


def _set_input(interpreter, x):
    """Sets one example (float, preprocessed) as TFLM input 0, quantizing if needed."""
    detail = interpreter.get_input_details(0)
    dtype = np.dtype(detail["dtype"])
    x = np.asarray(x, np.float32).reshape([int(d) for d in detail["shape"]])
    if dtype.kind in "iu":
        params = detail["quantization_parameters"]
        scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    interpreter.set_input(x.astype(dtype), 0)


def _get_output(interpreter):
    detail = interpreter.get_output_details(0)
    y = np.asarray(interpreter.get_output(0))
    if np.dtype(detail["dtype"]).kind in "iu":
        params = detail["quantization_parameters"]
        scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def micro(content, x_test=None, y_test=None, arena_limit=DEFAULT_ARENA_LIMIT):
    """Runs a flatbuffer on TFLM: arena bytes, op support, and test accuracy.

    Args:
      content: ``.tflite`` flatbuffer bytes.
      x_test: uint8 images (preprocessed with kd_keras.data.preprocess) or
        preprocessed floats; None: arena only (one invocation on zeros).
      y_test: integer labels for `x_test`.
      arena_limit: the arena the measuring interpreter is given (bytes).

    Returns:
      dict: tflm_runs (bool); when True arena_bytes, arena_head_bytes,
      arena_tail_bytes, arena_kinds and, with data, tflm_accuracy and
      tflm_num_test; when False tflm_missing_ops (op names, possibly empty)
      and tflm_error (TFLM's own message).
    """

    def build():
        interpreter = runtime.Interpreter.from_bytes(bytes(content), arena_size=int(arena_limit))
        shape = [int(d) for d in interpreter.get_input_details(0)["shape"]]
        _set_input(interpreter, np.zeros(shape, np.float32))
        interpreter.invoke()
        interpreter.print_allocations()
        return interpreter

    interpreter, text = _captured(build)
    if isinstance(interpreter, Exception):
        ops = missing_ops(text)
        reason = f"TFLM has no kernel for {', '.join(ops)}" if ops else str(interpreter)
        return {
            "tflm_runs": False,
            "tflm_missing_ops": ops,
            "tflm_error": f"{reason}. {text.strip()[-300:]}".strip(),
        }
    result = {"tflm_runs": True, **parse_allocations(text)}
    if x_test is not None:
        result.update(micro_accuracy(interpreter, x_test, y_test, content))
    return result


def micro_accuracy(interpreter, x_test, y_test, content=None):
    """Top-1 accuracy of a TFLM interpreter on (x_test, y_test), one example per call,
    and, given the flatbuffer `content`, its agreement with LiteRT on the same file.

    The two runtimes' int8 kernels may round a requantization differently,
    so an output can differ by an output step or more; where a test image's
    two best classes are within twice that, the top-1 class can differ (a
    barely trained model has many such images). The agreement figures say
    how often and by how much, so a card explains two accuracies of one file.

    Returns:
      dict: tflm_accuracy, tflm_num_test and, with `content`,
      tflm_litert_agreement (fraction of equal top-1 classes),
      tflm_litert_max_abs_diff (largest output difference, dequantized),
      tflm_output_step (the output's quantization scale, or None) and
      tflm_litert_differ (images whose top-1 class differs).

    Raises:
      ExportError: mismatched or empty data, or a failed invocation.
    """
    y_test = np.asarray(y_test).reshape(-1)
    if len(x_test) != len(y_test) or len(y_test) == 0:
        raise ExportError(
            f"x_test and y_test must be non-empty and of equal length, got "
            f"{len(x_test)} and {len(y_test)}."
        )
    correct, agree, max_diff = 0, 0, 0.0
    try:
        for start in range(0, len(y_test), 1024):  # A chunk at a time: may be a memmap.
            x = np.asarray(x_test[start : start + 1024])
            if np.issubdtype(x.dtype, np.integer):
                x = np.asarray(data_lib.preprocess(x), np.float32)
            outputs = []
            for image in x:
                _set_input(interpreter, image[None])
                interpreter.invoke()
                outputs.append(_get_output(interpreter).reshape(-1))
            outputs = np.stack(outputs)
            labels = y_test[start : start + 1024]
            correct += int(np.sum(outputs.argmax(-1) == labels))
            if content is not None:
                reference, _ = measure_lib.predict(content, x)
                reference = reference.reshape(len(x), -1)
                max_diff = max(max_diff, float(np.abs(reference - outputs).max()))
                agree += int(np.sum(reference.argmax(-1) == outputs.argmax(-1)))
    except RuntimeError as e:
        raise ExportError(f"TFLM invocation failed: {e}") from e
    result = {"tflm_accuracy": round(correct / len(y_test), 6), "tflm_num_test": len(y_test)}
    if content is not None:
        params = interpreter.get_output_details(0)["quantization_parameters"]
        scales = list(params.get("scales", []))
        result.update(
            tflm_litert_agreement=round(agree / len(y_test), 6),
            tflm_litert_max_abs_diff=max_diff,
            tflm_output_step=float(scales[0]) if scales else None,
            tflm_litert_differ=len(y_test) - agree,
        )
    return result
