"""Where the time goes: a per-op cost profile of a ``.tflite`` file (an estimate).

LiteRT 2.3.0 (``ai_edge_litert``) gives no measured per-op time from Python:
its ``Interpreter`` wrapper has no profiler hook (``experimental_preserve_all_tensors``
keeps intermediate tensors, it times nothing, and
``experimental_force_delegate_node_profiling`` only matters to a profiler the
Python API cannot attach), ``CompiledModel`` has none either, and the shipped
``litert-benchmark`` (``ai_edge_litert/tools/benchmark_litert_model.py``)
times whole invocations only: it rejects ``--enable_op_profiling``. So the
profile is a cost model, computed from the flatbuffer and labelled
``kind: "estimate"``:

* ``macs``: multiply-accumulates of one example (:func:`export.measure.op_macs`:
  CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV; 0 elsewhere);
* ``bytes``: bytes moved, i.e. the op's constant inputs (weights, biases,
  shapes) plus its activation inputs plus its outputs, at the tensors'
  allocated shapes and dtypes;
* ``cost = macs + bytes`` (one unit per MAC and per byte: a memory-bound op
  such as a reshape or a pooling still costs something), and ``share`` =
  cost / total cost, so shares sum to 1.

The graph is the converter's, read without delegates; XNNPack fuses and
repacks it at run time, which this model does not see. Multiply a share by a
measured net latency (``latency_us_net_median``) for an estimated time.
"""

import os

import numpy as np

from export import measure as measure_lib
from kd_keras import runs

KIND = "estimate"
BASIS = (
    "cost model, not a measurement: cost = MACs + bytes moved (weights + input and output "
    "activations) per op, from the flatbuffer; LiteRT's Python API has no per-op timer"
)
PROFILE_SUFFIX = ".profile.json"


def _tensor_bytes(interpreter, index):
    detail = interpreter._get_tensor_details(index, 0)  # noqa: SLF001
    return int(np.prod(detail["shape"], dtype=np.int64)) * np.dtype(detail["dtype"]).itemsize


def op_costs(tflite_path_or_bytes):
    """Cost figures of every op in execution order.

    Args:
      tflite_path_or_bytes: ``.tflite`` path or flatbuffer bytes.

    Returns:
      list of dicts: index, op_type, macs, weight_bytes (constant inputs),
      activation_bytes (other inputs and the outputs), bytes, cost, share.

    Raises:
      ExportError: unreadable or corrupted model.
    """
    content, source = measure_lib.read_tflite(tflite_path_or_bytes)
    interpreter = measure_lib.make_interpreter(content, xnnpack=False, source=source)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # noqa: SLF001
    produced = {int(t) for op in ops for t in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    rows = []
    for op in ops:
        weights = activations = 0
        for index in (int(t) for t in op["inputs"]):
            if index < 0:
                continue  # An omitted optional operand.
            size = _tensor_bytes(interpreter, index)
            if index in produced or index in graph_inputs:
                activations += size
            else:
                weights += size
        activations += sum(_tensor_bytes(interpreter, int(t)) for t in op["outputs"])
        macs = int(measure_lib.op_macs(interpreter, op))
        rows.append(
            {
                "index": int(op["index"]),
                "op_type": op["op_name"],
                "macs": macs,
                "weight_bytes": int(weights),
                "activation_bytes": int(activations),
                "bytes": int(weights + activations),
                "cost": int(macs + weights + activations),
            }
        )
    total = sum(r["cost"] for r in rows)
    for r in rows:
        r["share"] = r["cost"] / total if total else 0.0
    return rows


def profile(tflite_path_or_bytes):
    """The per-op and per-op-type profile of one ``.tflite`` file.

    Returns:
      dict: kind ("estimate"), basis (what the figures are), total_macs,
      total_bytes, by_type (one entry per op type, largest share first: op_type,
      count, macs, bytes, share) and ops (see :func:`op_costs`).

    Raises:
      ExportError: unreadable or corrupted model.
    """
    ops = op_costs(tflite_path_or_bytes)
    by_type = {}
    for r in ops:
        entry = by_type.setdefault(
            r["op_type"], {"op_type": r["op_type"], "count": 0, "macs": 0, "bytes": 0, "share": 0.0}
        )
        entry["count"] += 1
        entry["macs"] += r["macs"]
        entry["bytes"] += r["bytes"]
        entry["share"] += r["share"]
    return {
        "kind": KIND,
        "basis": BASIS,
        "total_macs": sum(r["macs"] for r in ops),
        "total_bytes": sum(r["bytes"] for r in ops),
        "by_type": sorted(by_type.values(), key=lambda e: (-e["share"], e["op_type"])),
        "ops": ops,
    }


def profile_path(tflite_path):
    """``<name>.<format>.profile.json`` beside ``<name>.<format>.tflite``."""
    return os.path.splitext(os.fspath(tflite_path))[0] + PROFILE_SUFFIX


def write_profile(tflite_path):
    """Profiles a ``.tflite`` file and writes the JSON beside it.

    Returns:
      (path of the JSON, the profile dict).
    """
    result = profile(tflite_path)
    path = profile_path(tflite_path)
    runs.write_json(path, result)
    return path, result


def markdown_table(result, net_us=None):
    """The per-op-type table as Markdown lines.

    Args:
      result: a :func:`profile` dict (or the card's copy of it).
      net_us: measured net latency in µs; when given, a column shows each
        type's share of it (still an estimate).
    """
    header = "| op type | count | MACs | bytes moved | est. share |"
    rule = "|---|---|---|---|---|"
    if net_us is not None:
        header, rule = header + " est. µs of net median |", rule + "---|"
    lines = [f"Per-op cost ({result['kind']}: {result['basis']}).", "", header, rule]
    for e in result["by_type"]:
        cells = [e["op_type"], e["count"], e["macs"], e["bytes"], f"{e['share']:.1%}"]
        if net_us is not None:
            cells.append(f"{e['share'] * net_us:.1f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines
