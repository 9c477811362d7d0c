"""Entry point: ``python -m export.main --model=PATH --out_dir=DIR``.

Converts a saved Keras model to the requested TFLite formats, measures each
file (bytes, gzip bytes, weights, MACs, latency, accuracy; TFLM arena and
accuracy for int8) and prints a table. Writes ``<name>.<format>.tflite`` with
its model card (``.card.json``, ``.card.md``), ``<name>.labels.txt``,
``export_results.json`` and the resolved flags (``export_flags.txt``) into
``--out_dir``. A quantization-aware-trained model exports as int8 only; the
command says so.

Example::

    python -m export.main --model=/tmp/kd/runs/student-kd-*/model.keras \\
        --export_formats=float32,int8 --out_dir=/tmp/export --export_threads=1,2
"""

import dataclasses
import os
import sys

from absl import app, flags, logging

import export
from export import flags as export_flags
from kd_keras import console, flag_groups, runs
from kd_keras import data as data_lib
from kd_keras.distill import teachers

FLAGS = flags.FLAGS
RESULTS_FILE = "export_results.json"

COLUMNS = (
    ("format", "format", "{}"),
    ("threads", "thr", "{}"),
    ("file_bytes", "bytes", "{}"),
    ("gzip_bytes", "gzip", "{}"),
    ("nonzero_params", "nonzero", "{}"),
    ("macs", "MACs", "{}"),
    ("latency_us_median", "med us", "{:.1f}"),
    ("latency_us_p90", "p90 us", "{:.1f}"),
    ("latency_cv", "CV", "{:.3f}"),
    ("latency_us_net_median", "net us", "{:.1f}"),
    ("arena_bytes", "arena", "{}"),
    ("tflm_accuracy", "TFLM acc", "{:.4f}"),
    ("accuracy", "acc", "{:.4f}"),
    ("keras_agreement", "agree", "{:.4f}"),
    ("bytes_vs_float32", "bytes/f32", "{:.3f}"),
    ("latency_vs_float32", "lat/f32", "{:.3f}"),
)


def results_table(rows):
    """A Markdown table of export rows (missing figures print as '-')."""
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        cells = [
            fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# What a rerun does after a full disk (kd_keras.console.exit_on_full_disk).
RESUMES = "rerun the same command to export the model again."

# absl's flag parsing, an invalid flag reported in one line.
parse_flags = flag_groups.parse_flags


def main(argv):
    """Exports and measures the model the flags name; prints the table."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = export_flags
    out_dir, model_path = f.OUT_DIR.value, f.MODEL.value
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        sys.exit(f"Invalid flag: --out_dir={out_dir} is a file; it must be a directory.")
    try:  # The model's kind, before any data is loaded.
        export.check_model_path(model_path)
    except export.ExportError as e:
        sys.exit(f"Invalid flag: --model={model_path}: {e}")
    with console.exit_on_full_disk(RESUMES):
        os.makedirs(out_dir, exist_ok=True)
        console.setup(out_dir, verbose=f.CONSOLE.show_logs.value)
        runs.write_text(
            os.path.join(out_dir, "export_flags.txt"),
            "".join(
                flag.serialize() + "\n"
                for module in (export_flags, flag_groups)
                for flag in FLAGS.get_key_flags_for_module(module)
            ),
        )
        data = None
        if f.DATA.dataset.value != f.NO_DATASET:
            try:
                config = dataclasses.replace(flag_groups.data_config(f.DATA, f.SOURCE), val_size=0)
                data = config.load()
            except data_lib.DataError as e:
                sys.exit(f"Cannot load the dataset: {e}")
        if data is not None:  # The range it expects, on training images (what calibrates it).
            try:
                report = export.check_input_range(model_path, data, f.INPUT_RANGE.value)
            except export.ExportError as e:
                sys.exit(f"Cannot check --input_range={f.INPUT_RANGE.value}: {e}")
            print(teachers.accuracy_line("Model", report))
        name = f.NAME.value or os.path.splitext(os.path.basename(model_path.rstrip("/")))[0]
        try:
            rows = export.export_model(
                model_path,
                out_dir,
                f.EXPORT.export_formats.value,
                data=data,
                num_calibration=f.EXPORT.num_calibration.value,
                threads=flag_groups.export_threads(f.EXPORT),
                latency_runs=f.EXPORT.latency_runs.value,
                name=name,
                warmup=f.EXPORT.latency_warmup.value,
                xnnpack=f.EXPORT.xnnpack.value,
                int8_io=f.EXPORT.int8_io.value,
                batch_size=f.EVAL_BATCH.value,
                results_file=RESULTS_FILE,
                input_range=f.INPUT_RANGE.value,
            )
        except export.ExportError as e:
            sys.exit(f"Export failed: {e}")
        results_path = os.path.join(out_dir, RESULTS_FILE)
        skipped = rows[0].get("formats_skipped") if rows else None
        if skipped:
            print(
                f"{model_path} is a quantization-aware-trained model: exported as int8 only "
                f"({', '.join(skipped)} not made; a QAT model converts to int8 whatever the "
                "format)."
            )
        for row in rows:
            if row.get("tflm_runs") is False and row["threads"] == rows[0]["threads"]:
                print(f"{row['format']} does not run on TFLite Micro: {row['tflm_error']}")
        print()
        print(results_table(rows))
        print(f"\nResults written to {results_path}")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main, flags_parser=parse_flags)
