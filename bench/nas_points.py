"""Given points of a search space, at a search's full budget: accuracy, int8 bytes and latency.

    PYTHONPATH=. python bench/nas_points.py \\
        --flagfile=kd_keras/configs/nas_aim_fashion_mnist.flags \\
        --downsampling=maxpool,strided,avgpool,strided_first,strided_stem \\
        --project_dir=workdirs/nas_points \\
        --points='cnn:0.25,cnn:0.25/stage1_filters=8/stage3_filters=12'

Each ``--points`` item is a hand point ``FAMILY:WIDTH[:STAGES]``
followed by ``/NAME=VALUE`` changes of its hyperparameters, e.g.
``cnn:0.25/downsample=strided_stem`` (``nas.space.changed_point``). Every point is
trained from scratch as the search's final step trains its students
(``nas.final.retrain``: ``--final_epochs`` epochs with the search's KD recipe,
teacher cache, augmentation and seed), exported to int8, and then all int8
files are timed together in ``--final_timings`` timing processes
(``nas.final.retime``: each file keeps its median process). Prints one row
per point: parameters, validation and test accuracy, int8 bytes, the joint
latency and every process's median. Answers "is there a point cheaper than
this hand point at its accuracy?" without a search; compare points by their
validation accuracy (the test split is for the final report). Runs resume:
a point trained before in ``--project_dir`` is not trained again.
"""

import json
import os

from absl import app, flags

from kd_keras import data as data_lib
from nas import final
from nas import flags as nas_flags
from nas import main as nas_main
from nas import space as search_space

_POINTS = flags.DEFINE_list(
    "points", None, "FAMILY:WIDTH[:STAGES][/NAME=VALUE...] items (see the module doc)."
)
POINTS_DIR = "points"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _POINTS.value:
        raise app.UsageError("--points: give at least one point.")
    f = nas_flags
    try:
        cfg = nas_main.configure()
        shapes = data_lib.placeholder(f.DATA.dataset.value)
        space = nas_main.make_space(shapes.input_shape, shapes.num_classes)
        points = [search_space.changed_point(item, space) for item in _POINTS.value]
    except ValueError as e:
        raise app.UsageError(f"--points: {e}") from None
    project = os.path.join(f.PROJECT_DIR.value, f.PROJECT_NAME.value)
    try:
        search = nas_main.make_search(cfg, project)
    except data_lib.DataError as e:
        raise SystemExit(f"Cannot load the dataset: {e}") from None
    search.get_teacher()
    rows = []
    for name, values in points:
        row = final.retrain(
            search,
            {"name": name, "values": values},
            f.FINAL_EPOCHS.value,
            os.path.join(project, POINTS_DIR, name),
            latency_runs=f.EXPORT.latency_runs.value,
            latency_warmup=f.EXPORT.latency_warmup.value,
        )
        rows.append(dict(row, name=name, values=values))
        print(f"{name}: val {row['val_accuracy']:.4f}", flush=True)
    final.retime(
        search,
        rows,
        latency_runs=f.EXPORT.latency_runs.value,
        latency_warmup=f.EXPORT.latency_warmup.value,
        timings=f.FINAL_TIMINGS.value,
    )
    print(
        f"\n{f.FINAL_EPOCHS.value} epochs; int8 latency: median of {f.FINAL_TIMINGS.value} "
        "joint timing processes (and each process's median)"
    )
    print("| point | params | val acc | test acc | int8 bytes | int8 us | per process |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        timings = ", ".join(f"{t:.2f}" for t in r["int8_latency_us_timings"])
        print(
            f"| {r['name']} | {r['params']} | {r['val_accuracy'] * 100:.2f} | "
            f"{r['test_accuracy'] * 100:.2f} | {r['int8_file_bytes']} | "
            f"{r['int8_latency_us']:.2f} | {timings} |"
        )
    out = os.path.join(project, POINTS_DIR, "points.json")
    keep = ("name", "values", "params", "val_accuracy", "test_accuracy", "int8_file_bytes",
            "int8_latency_us", "int8_latency_us_timings")  # fmt: skip
    with open(out + ".tmp", "w") as fh:
        json.dump([{k: r[k] for k in keep} for r in rows], fh, indent=1)
    os.replace(out + ".tmp", out)
    print(f"Rows: {out}")


if __name__ == "__main__":
    app.run(main, flags_parser=nas_main.parse_flags)
