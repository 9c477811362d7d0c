"""Entry point: ``python -m export.main --model=PATH --out_dir=DIR``.

Converts a saved Keras model to the requested TFLite formats, measures each
file (bytes, gzip bytes, weights, MACs, latency, accuracy) and prints a table.
Writes ``<name>.<format>.tflite``, ``export_results.json`` and the resolved
flags (``export_flags.txt``) into ``--out_dir``.

Example::

    python -m export.main --model=/tmp/kd/runs/student-kd-*/model.keras \\
        --quantization=float32,int8 --out_dir=/tmp/export --threads=1,2
"""

import os
import sys

from absl import app, flags, logging

import export
from export import flags as export_flags
from kd_keras import console, runs
from kd_keras import data as data_lib

FLAGS = flags.FLAGS
RESULTS_FILE = "export_results.json"

COLUMNS = (("format", "format", "{}"), ("threads", "thr", "{}"), ("file_bytes", "bytes", "{}"),
           ("gzip_bytes", "gzip", "{}"), ("nonzero_params", "nonzero", "{}"),
           ("macs", "MACs", "{}"), ("latency_us_median", "med us", "{:.1f}"),
           ("latency_us_p90", "p90 us", "{:.1f}"), ("accuracy", "acc", "{:.4f}"),
           ("keras_agreement", "agree", "{:.4f}"), ("bytes_vs_float32", "bytes/f32", "{:.3f}"),
           ("latency_vs_float32", "lat/f32", "{:.3f}"))


def results_table(rows):
    """A Markdown table of export rows (missing figures print as '-')."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-"
                 for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    out_dir = export_flags._OUT_DIR.value
    model_path = export_flags._MODEL.value
    os.makedirs(out_dir, exist_ok=True)
    console.setup(out_dir, verbose=export_flags._SHOW_LOGS.value)
    runs.write_text(os.path.join(out_dir, "export_flags.txt"), "".join(
        flag.serialize() + "\n" for flag in FLAGS.get_key_flags_for_module(export_flags)))
    data = None
    if export_flags._DATASET.value != export_flags.NO_DATASET:
        try:
            data = data_lib.load_dataset(
                export_flags._DATASET.value, data_dir=export_flags._DATA_DIR.value,
                manual_dir=export_flags._MANUAL_DIR.value, val_size=0,
                limit_test=export_flags._LIMIT_TEST.value)
        except data_lib.DataError as e:
            sys.exit(f"Cannot load the dataset: {e}")
    name = export_flags._NAME.value or os.path.splitext(
        os.path.basename(model_path.rstrip("/")))[0]
    try:
        rows = export.export_model(
            model_path, out_dir, export_flags._QUANTIZATION.value, data=data,
            num_calibration=export_flags._NUM_CALIBRATION.value,
            threads=[int(t) for t in export_flags._THREADS.value],
            latency_runs=export_flags._LATENCY_RUNS.value, name=name,
            warmup=export_flags._WARMUP.value, xnnpack=export_flags._XNNPACK.value,
            int8_io=export_flags._INT8_IO.value, batch_size=export_flags._BATCH.value,
            results_file=RESULTS_FILE)
    except export.ExportError as e:
        sys.exit(f"Export failed: {e}")
    results_path = os.path.join(out_dir, RESULTS_FILE)
    print()
    print(results_table(rows))
    print(f"\nResults written to {results_path}")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
