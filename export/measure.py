"""Measures a ``.tflite`` model as deployed: size, work, latency and accuracy.

Everything is read from the flatbuffer or measured in the LiteRT interpreter
(``ai_edge_litert``), never taken from the Keras model it came from:

* ``file_bytes`` and ``gzip_bytes`` (gzip level 9 of the flatbuffer, as
  TF-MOT's ``get_gzipped_size``: zeroed weights compress, so pruning shows).
* ``params`` and ``nonzero_params``: elements of the model's *weight* tensors.
  A weight tensor is a constant tensor (an operator input that no operator
  produces and that is not a graph input) except integer index operands: an
  int32/int64 constant counts only when it is the bias of CONV_2D,
  DEPTHWISE_CONV_2D, FULLY_CONNECTED or TRANSPOSE_CONV (int8 models keep
  biases in int32); shapes, axes, paddings and permutations do not count.
  Float16 weights (the DEQUANTIZE inputs of a float16 model) count once.
  BatchNormalization is folded into the convolutions by the converter, so
  these counts are below Keras' ``count_params``.
* ``macs``: multiply-accumulates of one example in CONV_2D, DEPTHWISE_CONV_2D,
  FULLY_CONNECTED and TRANSPOSE_CONV, from the filter and output shapes.
* latency of single-example invocations with the protocol of
  :mod:`export.latency` (its own process, interleaved with an identity model
  that gives the per-call overhead, runs added until the median's 95% CI is
  within 2%): median, p10/p90, IQR, CV, net of overhead, in microseconds,
  with ``threads`` interpreter threads and the XNNPack delegate on (default)
  or off.
* ``accuracy`` on (x_test, y_test) through the interpreter, batched when the
  input's batch dimension is dynamic, and the top-1 agreement with the Keras
  model when one is given.
* the figures of TFLite's ``benchmark_model`` tool when it is on PATH.
"""

import gzip
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from export import latency as latency_lib
from export.convert import ExportError, check_flatbuffer, identity_model
from kd_keras import data as data_lib
from kd_keras import runs

DEFAULT_NUM_RUNS = 200  # Timed rounds before the stopping rule is checked.
DEFAULT_MAX_RUNS = latency_lib.DEFAULT_MAX_RUNS
DEFAULT_WARMUP = 20
DEFAULT_BATCH_SIZE = 256

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
# Operand position of the filter and the bias in each op with weights.
_FILTER_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}


# ----------------------------------------------------------------------------
# Loading


def read_tflite(tflite_path_or_bytes):
    """Returns (flatbuffer bytes, a label for messages: the path or '<bytes>').

    Raises:
      ExportError: missing path, unreadable file, or not a TFLite flatbuffer.
    """
    if isinstance(tflite_path_or_bytes, (bytes, bytearray, memoryview)):
        content, source = bytes(tflite_path_or_bytes), "<bytes>"
    else:
        source = os.fspath(tflite_path_or_bytes)
        if not os.path.isfile(source):
            raise ExportError(f"TFLite model not found (or not a file): {source}")
        with open(source, "rb") as f:
            content = f.read()
    check_flatbuffer(content, source)
    return content, source


def make_interpreter(content, threads=1, xnnpack=True, source="<bytes>"):
    """A LiteRT interpreter for `content` (tensors not yet allocated).

    Args:
      content: flatbuffer bytes.
      threads: interpreter threads (>= 1).
      xnnpack: apply the default XNNPack delegate; False selects
        ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``.
      source: path or label used in error messages.

    Raises:
      ExportError: the interpreter rejects the model (corrupted flatbuffer,
        unsupported op) or `threads` < 1.
    """
    if int(threads) < 1:
        raise ExportError(f"threads must be >= 1, got {threads}.")
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(
            model_content=content, num_threads=int(threads), experimental_op_resolver_type=resolver
        )
    except (ValueError, RuntimeError) as e:
        raise ExportError(
            f"LiteRT cannot load {source} (corrupted or unsupported TFLite model): {e}"
        ) from e


def _allocate(interpreter, source):
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"LiteRT cannot allocate tensors for {source}: {e}") from e


def _single_io(interpreter, source):
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(
            f"{source} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "accuracy and latency need exactly one of each."
        )
    return inputs[0], outputs[0]


# ----------------------------------------------------------------------------
# Static figures


def gzip_size(content):
    """Bytes of `content` gzip-compressed at level 9 (deterministic: mtime 0)."""
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def model_stats(content, source="<bytes>"):
    """Weight counts, MACs and the op histogram of a flatbuffer.

    Uses an interpreter without delegates (so the graph is the converter's)
    and reads the constant tensors' values from it; see the module docstring
    for which tensors count as weights.

    Returns:
      dict: params, nonzero_params, sparsity (1 - nonzero/params), macs,
      ops ({op name: count}), weight_dtypes ({dtype name: elements}).
    """
    interpreter = make_interpreter(content, xnnpack=False, source=source)
    _allocate(interpreter, source)
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access
    produced = {int(t) for op in ops for t in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    bias_tensors = set()
    consumed = set()
    for op in ops:
        inputs = [int(t) for t in op["inputs"]]
        consumed.update(t for t in inputs if t >= 0)
        slot = _BIAS_INPUT.get(op["op_name"])
        if slot is not None and slot < len(inputs) and inputs[slot] >= 0:
            bias_tensors.add(inputs[slot])
    params = nonzero = 0
    dtypes = {}
    for index in sorted(consumed - produced - graph_inputs):
        detail = interpreter._get_tensor_details(index, 0)  # pylint: disable=protected-access
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "iu" and dtype.itemsize >= 4 and index not in bias_tensors:
            continue  # Shapes, axes, paddings: not weights.
        try:
            values = interpreter.get_tensor(index)
        except ValueError:
            continue  # A tensor without data (e.g. an optional operand).
        params += int(values.size)
        nonzero += int(np.count_nonzero(values))
        dtypes[dtype.name] = dtypes.get(dtype.name, 0) + int(values.size)
    macs = 0
    histogram = {}
    for op in ops:
        name = op["op_name"]
        histogram[name] = histogram.get(name, 0) + 1
        macs += op_macs(interpreter, op)
    return {
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": round(1.0 - nonzero / params, 6) if params else 0.0,
        "macs": int(macs),
        "ops": histogram,
        "weight_dtypes": dtypes,
    }


def _shape(interpreter, index):
    return [int(d) for d in interpreter._get_tensor_details(index, 0)["shape"]]  # noqa: SLF001


def op_macs(interpreter, op):
    """Multiply-accumulates of one op for one example (batch dimension divided out).

    Args:
      interpreter: an allocated interpreter without delegates.
      op: one entry of its ops details (``op_name``, ``inputs``, ``outputs``).

    Returns:
      The MACs of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
      TRANSPOSE_CONV from their filter and output shapes; 0 for other ops.
    """
    name = op["op_name"]
    if name not in _CONV_OPS:
        return 0
    filter_shape = _shape(interpreter, int(op["inputs"][_FILTER_INPUT[name]]))
    out_shape = _shape(interpreter, int(op["outputs"][0]))
    if name == "FULLY_CONNECTED":
        units, depth = filter_shape[0], filter_shape[-1]
        rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
        batch = out_shape[0] if len(out_shape) > 1 else 1
        return rows // max(batch, 1) * units * depth
    _, out_h, out_w, out_c = out_shape
    if name == "DEPTHWISE_CONV_2D":  # Filter (1, kh, kw, out_c).
        return out_h * out_w * out_c * filter_shape[1] * filter_shape[2]
    if name == "TRANSPOSE_CONV":  # Filter (out_c, kh, kw, in_c): per input pixel.
        in_shape = _shape(interpreter, int(op["inputs"][2]))
        return int(np.prod(in_shape[1:3])) * int(np.prod(filter_shape))
    # CONV_2D, filter (out_c, kh, kw, in_c / groups).
    return out_h * out_w * int(np.prod(filter_shape))


# ----------------------------------------------------------------------------
# Running


def _quantize(x, detail):
    """Float input -> the input tensor's dtype (quantized when it is integer)."""
    try:
        return latency_lib.quantize_input(x, detail)
    except ValueError as e:
        raise ExportError(str(e)) from e


def _dequantize(y, detail):
    """Output tensor values -> float32 (dequantized when integer)."""
    if np.dtype(detail["dtype"]).kind not in "iu":
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * (scale or 1.0)


def _as_model_input(x):
    """uint8 images -> kd_keras.data.preprocess; floating arrays pass unchanged."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer):
        return np.asarray(data_lib.preprocess(x), dtype=np.float32)
    return x.astype(np.float32)


def predict(tflite_path_or_bytes, x, batch_size=DEFAULT_BATCH_SIZE, threads=1, xnnpack=True):
    """Runs the TFLite model on `x` and returns float32 outputs (dequantized).

    Args:
      tflite_path_or_bytes: ``.tflite`` path or flatbuffer bytes.
      x: uint8 images (preprocessed with :func:`kd_keras.data.preprocess`) or
        already preprocessed float images, shape (N, H, W, C).
      batch_size: examples per invocation when the input's batch dimension is
        dynamic (the input tensor is resized); otherwise one at a time.
      threads: interpreter threads.
      xnnpack: use the XNNPack delegate.

    Returns:
      (outputs (N, ...) float32, batched: whether batched invocation was used).

    Raises:
      ExportError: unreadable model, several inputs/outputs, or a failed run.
    """
    content, source = read_tflite(tflite_path_or_bytes)
    x = _as_model_input(x)
    interpreter = make_interpreter(content, threads, xnnpack, source)
    inp, _ = _single_io(interpreter, source)
    batch = max(1, min(int(batch_size), len(x)))
    batched = False
    if batch > 1 and int(inp["shape_signature"][0]) == -1:
        try:
            interpreter.resize_tensor_input(inp["index"], [batch] + list(inp["shape"][1:]))
            interpreter.allocate_tensors()
            batched = True
        except (ValueError, RuntimeError):  # Model does not allow resizing.
            interpreter = make_interpreter(content, threads, xnnpack, source)
    if not batched:
        batch = 1
        if int(inp["shape"][0]) != 1:
            interpreter.resize_tensor_input(inp["index"], [1] + list(inp["shape"][1:]))
        _allocate(interpreter, source)
    inp, out = _single_io(interpreter, source)
    outputs = []
    try:
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            count = len(chunk)
            if count < batch:  # Pad the last batch rather than re-allocating.
                chunk = np.concatenate(
                    [chunk, np.zeros((batch - count,) + chunk.shape[1:], chunk.dtype)]
                )
            interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
            interpreter.invoke()
            outputs.append(_dequantize(interpreter.get_tensor(out["index"]), out)[:count])
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"Running {source} in LiteRT failed: {e}") from e
    return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32), batched


def _example_input(example, shape, seed=0):
    """One preprocessed float32 input of `shape` (no batch dim): `example` or random."""
    if example is None:
        return np.random.default_rng(seed).random(shape, dtype=np.float32)
    return _as_model_input(np.asarray(example)[None])[0]


def latency_together(
    models,
    example=None,
    num_runs=DEFAULT_NUM_RUNS,
    warmup=DEFAULT_WARMUP,
    threads=1,
    xnnpack=True,
    seed=0,
    max_runs=DEFAULT_MAX_RUNS,
):
    """Times several models interleaved in a timing process (:mod:`export.latency`).

    An identity model with the first model's input shape and dtype is timed in
    the same rounds, giving the per-call overhead and net figures.

    Args:
      models: {name: .tflite path or flatbuffer bytes}; all with the same input shape.
      example: one input (H, W, C) as uint8 or preprocessed float; random
        values in [0, 1) when None.
      num_runs: timed rounds before the stopping rule is first checked.
      warmup: untimed rounds first.
      threads: interpreter threads.
      xnnpack: use the XNNPack delegate.
      seed: seed of the random example.
      max_runs: cap on timed rounds.

    Returns:
      {name: figures of :func:`export.latency.measure_files`}.

    Raises:
      ExportError: bad arguments, a model that does not load, or a failed timing run.
    """
    if num_runs < 1 or warmup < 0:
        raise ExportError(f"num_runs must be >= 1 and warmup >= 0, got {num_runs}, {warmup}.")
    if int(threads) < 1:
        raise ExportError(f"threads must be >= 1, got {threads}.")
    with tempfile.TemporaryDirectory() as tmp:
        paths, shape, dtype = {}, None, None
        for name, model in models.items():
            content, source = read_tflite(model)
            interpreter = make_interpreter(content, xnnpack=False, source=source)
            inp, _ = _single_io(interpreter, source)
            if shape is None:
                shape, dtype = [int(d) for d in inp["shape"][1:]], np.dtype(inp["dtype"])
            if source == "<bytes>":
                source = os.path.join(tmp, f"{len(paths)}.tflite")
                runs.write_text(source, content)
            paths[name] = source
        identity = os.path.join(tmp, "identity.tflite")
        runs.write_text(identity, identity_model(shape, dtype))
        try:
            return latency_lib.measure_files(
                paths,
                _example_input(example, shape, seed),
                identity_path=identity,
                threads=threads,
                xnnpack=xnnpack,
                warmup=warmup,
                min_runs=num_runs,
                max_runs=max_runs,
            )
        except latency_lib.LatencyError as e:
            raise ExportError(f"Timing {', '.join(models)} failed: {e}") from e


def latency(
    tflite_path_or_bytes,
    example=None,
    num_runs=DEFAULT_NUM_RUNS,
    warmup=DEFAULT_WARMUP,
    threads=1,
    xnnpack=True,
    seed=0,
    max_runs=DEFAULT_MAX_RUNS,
):
    """Times single-example invocations of one model with the latency protocol.

    See :func:`latency_together` (this is it with one model) and
    :mod:`export.latency` for the protocol.

    Returns:
      dict of latency_us_{median,p10,p90,iqr,mean,std,min}, latency_cv,
      latency_us_ci95, latency_runs (timed rounds used), latency_converged,
      overhead_us_median, latency_us_net_median, warmup_runs, threads,
      xnnpack, delegated_nodes (DELEGATE nodes in the executed graph: > 0
      when XNNPack took over ops).

    Raises:
      ExportError: bad arguments or a model that does not run.
    """
    return latency_together(
        {"model": tflite_path_or_bytes}, example, num_runs, warmup, threads, xnnpack, seed, max_runs
    )["model"]


# ----------------------------------------------------------------------------
# TFLite's benchmark_model tool (optional)

_BENCHMARK_PATTERNS = {
    "init_us": r"Init:\s*([\d.]+)",
    "first_inference_us": r"First inference:\s*([\d.]+)",
    "warmup_avg_us": r"Warmup \(avg\):\s*([\d.]+)",
    "inference_avg_us": r"Inference \(avg\):\s*([\d.]+)",
    "peak_memory_mb": r"[Pp]eak memory footprint \(MB\)[^:]*:\s*([\d.]+)",
}


def parse_benchmark_output(text):
    """Numbers from ``benchmark_model``'s log: {key: float} for those found."""
    found = {}
    for key, pattern in _BENCHMARK_PATTERNS.items():
        match = re.search(pattern, text)
        if match:
            found[key] = float(match.group(1))
    return found


def run_benchmark_model(
    tflite_path,
    num_runs=DEFAULT_NUM_RUNS,
    warmup=DEFAULT_WARMUP,
    threads=1,
    xnnpack=True,
    binary="benchmark_model",
    timeout=600,
):
    """Runs TFLite's ``benchmark_model`` on a ``.tflite`` file, if installed.

    Args:
      tflite_path: the model file.
      num_runs, warmup, threads, xnnpack: passed as ``--num_runs``,
        ``--warmup_runs``, ``--num_threads``, ``--use_xnnpack``.
      binary: executable name looked up on PATH (or a path).
      timeout: seconds before giving up.

    Returns:
      None when the binary is not found; otherwise a dict with the command,
      its return code and the parsed figures (see parse_benchmark_output), or
      an 'error' entry when it failed. Never raises for a failed run.
    """
    executable = shutil.which(binary)
    if executable is None:
        return None
    command = [
        executable,
        f"--graph={tflite_path}",
        f"--num_runs={int(num_runs)}",
        f"--warmup_runs={int(warmup)}",
        f"--num_threads={int(threads)}",
        f"--use_xnnpack={'true' if xnnpack else 'false'}",
    ]
    result = {"command": " ".join(command)}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        result["error"] = f"{type(e).__name__}: {e}"
        return result
    result["returncode"] = proc.returncode
    result.update(parse_benchmark_output(proc.stdout + "\n" + proc.stderr))
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout).strip()[-500:]
    return result


# ----------------------------------------------------------------------------
# Everything


ACCURACY_CHUNK = 8192


def accuracy(
    tflite_path_or_bytes,
    x_test,
    y_test,
    keras_model=None,
    batch_size=DEFAULT_BATCH_SIZE,
    threads=1,
    xnnpack=True,
):
    """Top-1 accuracy through the interpreter, and agreement with Keras.

    Args:
      tflite_path_or_bytes: ``.tflite`` path or flatbuffer bytes.
      x_test: uint8 (preprocessed here) or preprocessed float images.
      y_test: integer labels (N,).
      keras_model: optional Keras model fed the same preprocessed images.
      batch_size, threads, xnnpack: as in :func:`predict`.

    Returns:
      dict: accuracy, num_test, batched_inference, and with `keras_model`
      keras_accuracy, keras_agreement (fraction of equal top-1 predictions)
      and keras_max_abs_diff (largest output difference, dequantized).

    Raises:
      ExportError: mismatched lengths or a model that does not run.
    """
    y_test = np.asarray(y_test).reshape(-1)
    if len(x_test) != len(y_test) or len(y_test) == 0:
        raise ExportError(
            f"x_test and y_test must be non-empty and of equal length, got "
            f"{len(x_test)} and {len(y_test)}."
        )
    # A chunk at a time: the test split may be a memmap larger than memory.
    outputs, reference = [], []
    for start in range(0, len(y_test), ACCURACY_CHUNK):
        x = _as_model_input(x_test[start : start + ACCURACY_CHUNK])
        out, batched = predict(tflite_path_or_bytes, x, batch_size, threads, xnnpack)
        outputs.append(out.reshape(len(x), -1))
        if keras_model is not None:
            ref = np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0))
            reference.append(ref.reshape(len(x), -1).astype(np.float32))
    outputs = np.concatenate(outputs)
    predicted = outputs.argmax(-1)
    result = {
        "accuracy": round(float(np.mean(predicted == y_test)), 6),
        "num_test": int(len(y_test)),
        "batched_inference": batched,
    }
    if keras_model is not None:
        reference = np.concatenate(reference)
        result["keras_accuracy"] = round(float(np.mean(reference.argmax(-1) == y_test)), 6)
        result["keras_agreement"] = round(float(np.mean(reference.argmax(-1) == predicted)), 6)
        result["keras_max_abs_diff"] = float(np.max(np.abs(reference - outputs)))
    return result


def measure(
    tflite_path_or_bytes,
    x_test=None,
    y_test=None,
    keras_model=None,
    num_runs=DEFAULT_NUM_RUNS,
    warmup=DEFAULT_WARMUP,
    threads=1,
    xnnpack=True,
    batch_size=DEFAULT_BATCH_SIZE,
    benchmark_binary="benchmark_model",
    timing=True,
):
    """Measures one ``.tflite`` model: size, weights, MACs, latency, accuracy.

    Args:
      tflite_path_or_bytes: ``.tflite`` path or flatbuffer bytes.
      x_test: test images (uint8, or preprocessed float); when None, no
        accuracy is measured and latency uses a random input.
      y_test: integer labels for `x_test`.
      keras_model: optional Keras model to compare top-1 predictions with.
      num_runs: timed single-example rounds before the latency protocol's
        stopping rule is first checked.
      warmup: untimed invocations before timing.
      threads: interpreter threads.
      xnnpack: XNNPack delegate on (True) or off.
      batch_size: examples per invocation for accuracy.
      benchmark_binary: TFLite ``benchmark_model`` executable, run when found
        on PATH (needs a file: bytes are written to a temporary one).
      timing: False skips latency and benchmark_model (the exporter times
        all formats together with :func:`latency_together`).

    Returns:
      A flat dict of numbers: file_bytes, gzip_bytes, params, nonzero_params,
      sparsity, macs, ops, weight_dtypes, input_dtype, output_dtype, the
      latency figures of :func:`latency`, the accuracy figures of
      :func:`accuracy` (when data is given) and benchmark_model (None when
      the tool is absent).

    Raises:
      ExportError: missing or corrupted model, or inconsistent data.
    """
    content, source = read_tflite(tflite_path_or_bytes)
    if (x_test is None) != (y_test is None):
        raise ExportError("Pass both x_test and y_test, or neither.")
    result = {"file_bytes": len(content), "gzip_bytes": gzip_size(content)}
    result.update(model_stats(content, source))
    interpreter = make_interpreter(content, xnnpack=False, source=source)
    inp, out = _single_io(interpreter, source)
    result["input_dtype"] = np.dtype(inp["dtype"]).name
    result["output_dtype"] = np.dtype(out["dtype"]).name
    example = None if x_test is None or len(x_test) == 0 else x_test[0]
    if timing:
        result.update(latency(content, example, num_runs, warmup, threads, xnnpack))
    if x_test is not None:
        result.update(accuracy(content, x_test, y_test, keras_model, batch_size, threads, xnnpack))
    if not timing:
        return result
    if shutil.which(benchmark_binary) is None:
        result["benchmark_model"] = None
    elif source != "<bytes>":
        result["benchmark_model"] = run_benchmark_model(
            source, num_runs, warmup, threads, xnnpack, benchmark_binary
        )
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.tflite")
            with open(path, "wb") as f:
                f.write(content)
            result["benchmark_model"] = run_benchmark_model(
                path, num_runs, warmup, threads, xnnpack, benchmark_binary
            )
    return result
