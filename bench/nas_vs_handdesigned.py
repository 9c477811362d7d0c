"""A searched student against the hand-designed one, under the search's protocol.

    python bench/nas_vs_handdesigned.py --nas=workdirs/nas/fashion_mnist \
        --teacher=workdirs/fashion_mnist/runs/teacher0-<hash>/model.keras

Trains, in one process and with the same seed, data (8,000 training and 2,000
validation images, as nas_fashion_mnist.flags), epochs and KD settings, the
best architecture of a search (rebuilt untrained with ``nas.load_student``)
and hand-designed ``cnn`` students, then measures each as the search does
(float32 TFLite, median of 50 single-example LiteRT runs, 1 thread). Prints
validation accuracy, latency, bytes and parameters, so the searched student
can be compared with hand-designed ones at equal or lower latency.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_keras import data as data_lib  # noqa: E402
from kd_keras import (
    distill,
    models,  # noqa: E402
)
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nas", required=True, help="search project dir")
    parser.add_argument("--teacher", required=True, help="saved teacher model")
    parser.add_argument("--widths", default="0.25,0.5,1.0", help="hand-designed cnn widths")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import nas
    from nas import hardware

    data = data_lib.load_dataset("fashion_mnist", val_size=2000, limit_train=8000)
    datasets = data_lib.make_datasets(data, 128)
    teacher = keras.models.load_model(args.teacher, compile=False)
    config = train_lib.TrainConfig(epochs=args.epochs, optimizer="adam", learning_rate=3e-3)
    candidates = [("nas", lambda: nas.load_student(args.nas, data.input_shape, data.num_classes))]
    for w in args.widths.split(","):
        # BatchNorm momentum 0.9, as in the search space: a 126-step run leaves
        # 0.99's moving statistics unsettled and the model at chance.
        candidates.append(
            (
                f"cnn width {w}",
                lambda w=float(w): models.build(
                    "cnn", data.input_shape, data.num_classes, width=w, bn_momentum=0.9
                ),
            )
        )
    print("| student | val acc | float32 latency µs (median) | bytes | params |")
    print("|---|---|---|---|---|")
    for name, build in candidates:
        keras.utils.set_random_seed(0)
        model = build()
        train_lib.fit(
            model,
            datasets,
            config,
            f"/tmp/nas_vs_hand/{name}",
            teacher=teacher,
            kd=distill.KDConfig(),
            verbose=0,
            offline_data=data,
        )
        acc = train_lib.evaluate(model, datasets["val"])
        fig = hardware.measure_candidate(model, num_runs=50, warmup=10, threads=1)
        print(
            f"| {name} | {acc:.4f} | {fig['latency_us']:.1f} | {fig['file_bytes']:,} | "
            f"{model.count_params():,} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
