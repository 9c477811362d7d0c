"""A model card beside every ``.tflite``: JSON for machines, Markdown for people.

``write_card`` writes ``<name>.<format>.card.json`` and ``.card.md`` from the
rows :func:`export.export_model` measured for one file (one row per thread
count), and ``write_labels`` writes ``<name>.labels.txt`` (one class name per
line, line i = class i, as TFLite's tooling expects). The card carries the
per-op-type table of the file's ``.profile.json`` (:mod:`export.profile`, a
cost-model estimate, labelled as such).
"""

import json
import os

import numpy as np

from export import measure as measure_lib
from export import profile as profile_lib
from kd_keras import runs

PREPROCESSING = (
    "uint8 image (H, W, C) -> float32 = uint8 / 255.0 (kd_keras.data.preprocess); float32 "
    "inputs (an npz dataset of float32) are fed as they are; "
    "an int8 input then takes round(float / scale) + zero_point, clipped to [-128, 127]."
)
LITERT_PEAK_MEMORY = (
    "not available: LiteRT's Python API does not report peak memory; "
    "arena_bytes is TFLM's measured tensor arena (int8 only)."
)
_LATENCY_KEYS = (
    "threads",
    "xnnpack",
    "latency_us_median",
    "latency_us_p10",
    "latency_us_p90",
    "latency_us_iqr",
    "latency_cv",
    "latency_us_ci95",
    "latency_runs",
    "latency_converged",
    "overhead_us_median",
    "latency_us_net_median",
)
CARD_FIELDS = (
    "name",
    "format",
    "file",
    "input",
    "output",
    "preprocessing",
    "labels_file",
    "class_labels",
    "ops",
    "profile",
    "file_bytes",
    "gzip_bytes",
    "arena_bytes",
    "tflm",
    "litert_peak_memory",
    "latency",
    "accuracy",
    "command",
)


def labels_path(out_dir, name):
    """``<out_dir>/<name>.labels.txt``."""
    return os.path.join(out_dir, f"{name}.labels.txt")


def write_labels(out_dir, name, class_names):
    """Writes one class name per line; returns the path."""
    path = labels_path(out_dir, name)
    runs.write_text(path, "".join(f"{c}\n" for c in class_names))
    return path


def _tensor_spec(detail):
    scale, zero_point = detail["quantization"]
    spec = {"shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    if np.dtype(detail["dtype"]).kind in "iu":
        spec.update(scale=float(scale), zero_point=int(zero_point))
    return spec


def card(rows, class_names=(), command=()):
    """The model card of one ``.tflite`` file as a dict with CARD_FIELDS.

    Args:
      rows: export rows of the same file, one per thread count.
      class_names: class name of each output index.
      command: the command line that made the file (``sys.argv``).
    """
    first = rows[0]
    interpreter = measure_lib.make_interpreter(
        measure_lib.read_tflite(first["path"])[0], xnnpack=False, source=first["path"]
    )
    name = first["name"]
    tflm = {k: first[k] for k in first if k.startswith("tflm_")}
    return {
        "name": name,
        "format": first["format"],
        "file": os.path.basename(first["path"]),
        "input": _tensor_spec(interpreter.get_input_details()[0]),
        "output": _tensor_spec(interpreter.get_output_details()[0]),
        "preprocessing": PREPROCESSING,
        "labels_file": f"{name}.labels.txt" if class_names else None,
        "class_labels": list(class_names),
        "ops": first.get("ops"),
        "profile": _profile_summary(first.get("profile")),
        "file_bytes": first["file_bytes"],
        "gzip_bytes": first["gzip_bytes"],
        "arena_bytes": first.get("arena_bytes"),
        "tflm": tflm or None,
        "litert_peak_memory": LITERT_PEAK_MEMORY,
        "latency": [{k: row.get(k) for k in _LATENCY_KEYS} for row in rows],
        "accuracy": {
            "keras": first.get("keras_accuracy"),
            "tflite": first.get("accuracy"),
            "tflm": first.get("tflm_accuracy"),
            "num_test": first.get("num_test"),
        },
        "command": " ".join(command),
    }


def _profile_summary(path):
    """The per-op-type part of the profile JSON at `path` (None without one)."""
    if not path:
        return None
    with open(path) as f:
        result = json.load(f)
    keys = ("kind", "basis", "total_macs", "total_bytes", "by_type")
    return {"file": os.path.basename(path), **{k: result[k] for k in keys}}


def markdown(model_card):
    """The card as Markdown."""
    c = model_card
    spec = c["input"]
    quant = (
        f", scale {spec['scale']:.6g}, zero point {spec['zero_point']}" if "scale" in spec else ""
    )
    lines = [
        f"# {c['name']} ({c['format']})",
        "",
        f"- File: `{c['file']}`, {c['file_bytes']} bytes, {c['gzip_bytes']} gzip bytes",
        f"- Input: {spec['shape']} {spec['dtype']}{quant}",
        f"- Output: {c['output']['shape']} {c['output']['dtype']}",
        f"- Preprocessing: {c['preprocessing']}",
        f"- Labels: `{c['labels_file']}` ({len(c['class_labels'])} classes)",
        f"- Ops: {', '.join(f'{k} x{v}' for k, v in sorted((c['ops'] or {}).items()))}",
        f"- TFLM tensor arena: {_or_dash(c['arena_bytes'])} bytes",
        f"- TFLM: {tflm_text(c['tflm'])}",
        f"- LiteRT peak memory: {c['litert_peak_memory']}",
        f"- Accuracy: Keras {_or_dash(c['accuracy']['keras'])}, TFLite "
        f"{_or_dash(c['accuracy']['tflite'])}, TFLM {_or_dash(c['accuracy']['tflm'])} "
        f"(n = {_or_dash(c['accuracy']['num_test'])})",
        "",
        "| threads | XNNPack | median µs | p10 | p90 | IQR | CV | runs | converged "
        "| overhead µs | net median µs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in c["latency"]:
        lines.append(
            "| "
            + " | ".join(
                _or_dash(t[k])
                for k in (
                    "threads",
                    "xnnpack",
                    "latency_us_median",
                    "latency_us_p10",
                    "latency_us_p90",
                    "latency_us_iqr",
                    "latency_cv",
                    "latency_runs",
                    "latency_converged",
                    "overhead_us_median",
                    "latency_us_net_median",
                )
            )
            + " |"
        )
    if c["profile"]:
        net_us = c["latency"][0]["latency_us_net_median"] if c["latency"] else None
        lines += ["", "## Where the time goes", ""]
        lines += profile_lib.markdown_table(c["profile"], net_us)
        lines += ["", f"Per-op figures: `{c['profile']['file']}`."]
    lines += ["", f"Made by: `{c['command']}`", ""]
    return "\n".join(lines)


def _or_dash(value):
    return "-" if value is None else str(value)


def tflm_text(tflm):
    """The card's words on TFLite Micro: whether the file runs, and how far its
    top-1 classes agree with LiteRT's on the same file."""
    if not tflm:
        return "not measured (int8 files only)"
    if tflm.get("tflm_runs"):
        if tflm.get("tflm_litert_agreement") is None:
            return "runs"
        diff, step = tflm["tflm_litert_max_abs_diff"], tflm.get("tflm_output_step")
        text = (
            f"runs; its top-1 class agrees with LiteRT's on "
            f"{100 * tflm['tflm_litert_agreement']:.1f}% of the test images "
            f"({tflm.get('tflm_litert_differ', 0)} differ); outputs differ by at most {diff:.4g}"
        )
        if step:
            text += f" ({diff / step:.0f} output step(s) of {step:.4g})"
        if diff > 0:
            text += (
                ": the two runtimes' int8 kernels round differently, so an image whose two "
                "best classes are that close may change class"
            )
        return text
    return f"does not run ({tflm.get('tflm_error')})"


def write_card(rows, class_names=(), command=()):
    """Writes the JSON and Markdown cards beside ``rows[0]['path']``.

    Returns:
      (json path, markdown path).
    """
    model_card = card(rows, class_names, command)
    stem = os.path.splitext(rows[0]["path"])[0]
    json_path, md_path = stem + ".card.json", stem + ".card.md"
    runs.write_text(json_path, json.dumps(model_card, indent=2) + "\n")
    runs.write_text(md_path, markdown(model_card))
    return json_path, md_path
