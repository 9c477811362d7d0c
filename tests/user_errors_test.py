"""Every user error is one clear line, before any data is loaded or model trained.

Each case runs an entry point's real flag parsing and `main` in one
subprocess per entry point (absl flags are process-global), with the data
loaders replaced by a function that fails loudly: a case passes only if the
program exits non-zero with one line naming the flag and the value, and
never reached the data.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_image_folder

from kd_keras import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HARNESS = r"""
import json, sys
from absl import flags
from kd_keras import data as data_lib
from kd_keras.data import config, load, sources

def loaded(*args, **kwargs):
    raise AssertionError("DATA WAS LOADED")

# Every module that reads data by these names (each holds its own binding).
for module in (data_lib, config, load, sources):
    for name in ("load_dataset", "prepare_builder"):
        if hasattr(module, name):
            setattr(module, name, loaded)
module = __import__(sys.argv[1], fromlist=["main"])
for name, argv in json.loads(sys.argv[2]):
    flags.FLAGS.unparse_flags()
    code, message = 0, ""
    try:
        module.parse_flags(["prog"] + argv)
        module.main(["prog"])
    except SystemExit as e:
        code, message = (1, str(e.code)) if isinstance(e.code, str) else (e.code, "")
    except BaseException as e:  # A traceback: the case fails.
        code, message = 99, f"{type(e).__name__}: {e}"
    print("CASE " + json.dumps({"name": name, "code": code, "message": message}), flush=True)
"""


def _run(module, cases):
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, module, json.dumps([(n, a) for n, a, _ in cases])],
        cwd=ROOT,
        env={k: v for k, v in dict(os.environ, PYTHONPATH=ROOT).items() if k != "TF_CONFIG"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CASE "):
            row = json.loads(line[5:])
            results[row["name"]] = row
    assert len(results) == len(cases), proc.stderr[-3000:]
    return results


def _check(results, cases):
    for name, _, fragments in cases:
        row = results[name]
        message = row["message"]
        assert row["code"] not in (0, 99), f"{name}: exit {row['code']}: {message}"
        assert "DATA WAS LOADED" not in message, f"{name}: the data was loaded first"
        assert "\n" not in message.strip(), f"{name}: not one line: {message!r}"
        for fragment in fragments:
            assert fragment in message, f"{name}: {fragment!r} not in {message!r}"


def _save_teachers(directory):
    """Teachers of the wrong input shape, the wrong class count, and a Keras 3
    one (opaque to feature losses), saved by a subprocess (keeps this one light)."""
    code = (
        "import sys\n"
        "from kd_keras.keras_compat import keras, keras3\n"
        "def model(k, shape, classes):\n"
        "    i = k.Input(shape)\n"
        "    return k.Model(i, k.layers.Dense(classes)(k.layers.Flatten()(i)))\n"
        "d = sys.argv[1]\n"
        "model(keras, (32, 32, 3), 10).save(d + '/rgb32.keras')\n"
        "model(keras, (28, 28, 1), 100).save(d + '/classes100.h5')\n"
        "model(keras3(), (28, 28, 1), 10).save(d + '/keras3.keras')\n"
        "class Doubling(keras3().layers.Layer):\n"
        "    def call(self, x):\n"
        "        return x * 2.0\n"
        "i = keras3().Input((28, 28, 1))\n"
        "y = keras3().layers.Dense(10)(keras3().layers.Flatten()(Doubling()(i)))\n"
        "keras3().Model(i, y).save(d + '/custom3.keras')\n"
        "model(keras, (28, 28, 1), 10).save(d + '/whole.h5')\n"
        "i = keras.Input((28, 28, 1))\n"
        "x = keras.layers.LayerNormalization(name='ln')(keras.layers.Conv2D(4, 3)(i))\n"
        "x = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))\n"
        "keras.Model(i, x).save(d + '/layernorm.keras')\n"
        "whole = open(d + '/whole.h5', 'rb').read()\n"
        "open(d + '/truncated.h5', 'wb').write(whole[: len(whole) // 2])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(directory)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        check=True,
        capture_output=True,
        timeout=300,
    )
    names = (
        "rgb32.keras",
        "classes100.h5",
        "keras3.keras",
        "custom3.keras",
        "truncated.h5",
        "layernorm.keras",
    )
    return {n: str(directory / n) for n in names}


@pytest.fixture
def paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    corrupt = tmp_path / "teacher.keras"
    corrupt.write_bytes(b"this is not a zip file")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "one_class" / "cat").mkdir(parents=True)
    (tmp_path / "one_class" / "cat" / "0.png").write_bytes(b"")
    for name in ("cat", "dog"):
        (tmp_path / "bad_image" / name).mkdir(parents=True)
        (tmp_path / "bad_image" / name / "0.png").write_bytes(b"not a png")
    npz = {}
    rng = np.random.default_rng(0)
    for name, changes in {
        "mfcc": {},
        "no_labels": {"y_test": None},
        "short_labels": {"y_train": np.zeros(299, np.int64)},
        "label_range": {"y_test": np.full(40, 12), "class_names": np.array(list("abcd"))},
    }.items():
        arrays = {
            "x_train": rng.normal(size=(300, 49, 10, 1)).astype(np.float32),
            "y_train": np.arange(300) % 4,
            "x_test": rng.normal(size=(40, 49, 10, 1)).astype(np.float32),
            "y_test": np.arange(40) % 4,
        }
        arrays.update(changes)
        npz[name] = str(tmp_path / f"{name}.npz")
        np.savez(npz[name], **{k: v for k, v in arrays.items() if v is not None})
    return {
        **npz,
        "images": write_image_folder(str(tmp_path / "images")),
        "empty": str(empty),
        "one_class": str(tmp_path / "one_class"),
        "bad_image": str(tmp_path / "bad_image"),
        "file": str(a_file),
        "work": str(tmp_path / "work"),
        "corrupt": str(corrupt),
        "data": str(tmp_path / "tfds"),
        "locked": str(tmp_path / "locked"),
    }


def test_teacher_path_errors(paths, tmp_path):
    saved = _save_teachers(tmp_path)
    base = [
        "--flagfile=kd_keras/configs/smoke.flags",
        f"--workdir={paths['work']}",
        f"--data_dir={paths['data']}",
    ]
    cases = [
        (
            "slim on a student layer it cannot slice",
            base
            + ["--techniques=slim,qat", f"--student={saved['layernorm.keras']}", "--student_args="],
            ["--techniques=slim,qat", "layer 'ln' (LayerNormalization)", "slim handles"],
        ),
        (
            "teacher path missing",
            base + ["--teacher=/no/such/teacher.keras"],
            ["--teacher=/no/such/teacher.keras", "does not exist"],
        ),
        (
            "teacher neither name nor path",
            base + ["--teacher=resnet50"],
            ["--teacher=resnet50", "neither a registered model", "path"],
        ),
        (
            "teacher input shape",
            base + [f"--teacher={saved['rgb32.keras']}"],
            ["--teacher=", "(32, 32, 3)", "(28, 28, 1)"],
        ),
        (
            "teacher class count",
            base + [f"--teacher={saved['classes100.h5']}"],
            ["--teacher=", "gives 100 classes", "10 classes"],
        ),
        (
            "corrupt teacher file",
            base + [f"--teacher={paths['corrupt']}"],
            [f"--teacher={paths['corrupt']}", "not a .keras archive"],
        ),
        (
            "feature loss on a Keras 3 teacher",
            base + [f"--teacher={saved['keras3.keras']}", "--kd_losses=hint"],
            ["--kd_losses=hint", "opaque", "tf_keras teacher"],
        ),
        (
            "Keras 3 teacher with an unregistered custom layer",
            base + [f"--teacher={saved['custom3.keras']}"],
            [
                f"--teacher={saved['custom3.keras']}",
                "custom class(es) Doubling",
                "@keras.saving.register_keras_serializable()",
                "custom_objects={'Doubling': Doubling}",
            ],
        ),
        (
            "truncated .h5 teacher",
            base + [f"--teacher={saved['truncated.h5']}"],
            [f"--teacher={saved['truncated.h5']}", "not a readable HDF5", "truncated"],
        ),
        (
            "student path missing",
            base + ["--student=/no/such/student.keras"],
            ["--student=/no/such/student.keras", "does not exist"],
        ),
        (
            "student builder module missing",
            base + ["--student=no_such_module:build"],
            ["--student=no_such_module:build", "cannot import module", "PYTHONPATH"],
        ),
        (
            "student builder function missing",
            base + ["--student=kd_keras.models.cnn:no_such_builder"],
            ["--student=kd_keras.models.cnn:no_such_builder", "has no function"],
        ),
        (
            "student of the wrong output size",
            base + [f"--student={saved['classes100.h5']}", "--student_args="],
            [f"--student={saved['classes100.h5']}", "(100,)", "10 classes"],
        ),
        (
            "student of the wrong input shape",
            base + [f"--student={saved['rgb32.keras']}", "--student_args="],
            [f"--student={saved['rgb32.keras']}", "(32, 32, 3)", "(28, 28, 1)"],
        ),
        (
            "student neither name, path nor builder",
            base + ["--student=resnet50"],
            ["--student", "resnet50", "MODULE:FUNCTION"],
        ),
        (
            "student_init file of a registry student",
            base + ["--student_init=file"],
            ["--student=", "--student_init=file", "saved model file"],
        ),
        (
            "num_teachers against paths",
            base + [f"--teacher={saved['keras3.keras']}", "--num_teachers=3"],
            ["--num_teachers=3", "1 teacher path"],
        ),
    ]
    _check(_run("kd_keras.main", cases), cases)


def test_pipeline_and_study_errors(paths):
    base = [
        "--flagfile=kd_keras/configs/smoke.flags",
        f"--workdir={paths['work']}",
        f"--data_dir={paths['data']}",
    ]
    cases = [
        ("student_args garbage", base + ["--student_args=garbage"], ["--student_args", "garbage"]),
        ("kd_weights not a number", base + ["--kd_weights=x"], ["--kd_weights", "x"]),
        ("kd_weights count", base + ["--kd_weights=1,2"], ["--kd_weights=1,2", "one weight"]),
        ("seeds not integers", base + ["--mode=study", "--seeds=a,b"], ["--seeds", "a"]),
        ("seeds in pipeline mode", base + ["--seeds=1,2"], ["--seeds", "--mode=study"]),
        (
            "teacher_args bad value",
            base + ["--teacher_args=depth=abc"],
            ["--teacher_args=depth=abc", "depth='abc' is not an int", "'resnet'", "default 10"],
        ),
        (
            "teacher_args unknown key",
            base + ["--teacher_args=foo=1"],
            ["--teacher_args=foo=1", "takes no argument 'foo'", "depth, width"],
        ),
        (
            "student_args bad value",
            base + ["--student_args=width=wide"],
            ["--student_args=width=wide", "width='wide' is not a float", "'cnn'"],
        ),
        (
            "val_size beyond the training split",
            base + ["--val_size=70000"],
            ["--val_size=70000", "60000 training examples", "at most 59999"],
        ),
        (
            "val_size beyond a folder's training images",
            base + [f"--dataset=dir:{paths['images']}", "--val_size=40"],
            ["--val_size=40", "36 images, 29 for training", "at most 28"],
        ),
        (
            "workdir is a file",
            base + [f"--workdir={paths['file']}"],
            ["--workdir", paths["file"], "file"],
        ),
        (
            "workdir not creatable",
            base + ["--workdir=/proc/kd_keras_work"],
            ["--workdir=/proc/kd_keras_work"],
        ),
        (
            "hint on a missing layer",
            base + ["--kd_losses=hint", "--student_layer=nonexistent"],
            ["--kd_losses=hint", "nonexistent"],
        ),
        ("export format int4", base + ["--export_formats=int4"], ["--export_formats", "int4"]),
        ("export threads 0", base + ["--export_threads=0"], ["--export_threads", "0"]),
        ("unknown technique", base + ["--techniques=prune,bogus"], ["--techniques", "bogus"]),
        ("qat before prune", base + ["--techniques=qat,prune"], ["qat must be last"]),
        ("repeated technique", base + ["--techniques=prune,prune"], ["repeats"]),
        ("sparsity 1", base + ["--sparsity=1.0"], ["sparsity must be a number in [0, 1)"]),
        (
            "slim_fraction 1",
            base + ["--techniques=slim", "--slim_fraction=1.0"],
            ["slim_fraction must be a number in (0, 1), got 1.0"],
        ),
        ("slim after prune", base + ["--techniques=prune,slim"], ["out of order", "slim first"]),
        (
            "slim steps from scratch",
            base + ["--techniques=slim", "--slim_steps=2", "--compress_mode=scratch"],
            ["compress_mode='scratch' slims the fresh student once", "slim_steps=2"],
        ),
        (
            "two slim targets",
            base + ["--techniques=slim", "--slim_target_macs=0.5", "--slim_target_bytes=0.4"],
            ["at most one slim target", "slim_target_macs=0.5", "slim_target_bytes=0.4"],
        ),
        (
            "skip a missing layer",
            base + ["--compress_skip_layers=no_such_layer"],
            ["no_such_layer"],
        ),
        (
            "unknown study technique",
            base + ["--mode=study", "--study_techniques=none,bogus"],
            ["--study_techniques", "bogus"],
        ),
        ("bad augmentation", base + ["--student_augment=blur"], ["--student_augment", "blur"]),
        (
            "input range of a trained teacher",
            base + ["--teacher_input_range=0,255"],
            ["--teacher_input_range=0,255", "by path"],
        ),
        (
            "unknown input range",
            base + ["--teacher_input_range=0,100"],
            ["--teacher_input_range", "0,100"],
        ),
        (
            "unknown bagging budget",
            base + ["--mode=study", "--bagging_budgets=total,half"],
            ["--bagging_budgets", "total", "member"],
        ),
        (
            "missing extra teacher path",
            base + ["--mode=study", "--extra_teacher_path=/no/such/teacher.keras"],
            ["/no/such/teacher.keras"],
        ),
        (
            "bagging budgets outside the study",
            base + ["--bagging_budgets=member"],
            ["--bagging_budgets", "--mode=study"],
        ),
        (
            "unknown data storage",
            base + ["--data_storage=ram"],
            ["--data_storage", "ram", "disk"],
        ),
        ("unknown dataset", base + ["--dataset=imagenet"], ["--dataset", "imagenet"]),
        ("dataset not a name", base + ["--dataset=Fashion MNIST"], ["--dataset", "dir:PATH"]),
        (
            "dataset folder missing",
            base + ["--dataset=dir:/no/such/folder"],
            ["--dataset=dir:/no/such/folder", "does not exist"],
        ),
        (
            "dataset folder empty",
            base + [f"--dataset=dir:{paths['empty']}"],
            [f"--dataset=dir:{paths['empty']}", "0 class sub-folder"],
        ),
        (
            "dataset folder one class",
            base + [f"--dataset=dir:{paths['one_class']}"],
            [f"--dataset=dir:{paths['one_class']}", "at least 2"],
        ),
        (
            "dataset folder bad image",
            base + [f"--dataset=dir:{paths['bad_image']}"],
            [f"--dataset=dir:{paths['bad_image']}", "cannot decode image", "0.png"],
        ),
        (
            "npz missing",
            base + ["--dataset=npz:/no/such/data.npz"],
            ["--dataset=npz:/no/such/data.npz", "does not exist"],
        ),
        (
            "npz without a key",
            base + [f"--dataset=npz:{paths['no_labels']}"],
            [f"--dataset=npz:{paths['no_labels']}", "lacks y_test", "x_train, y_train"],
        ),
        (
            "npz labels of another length",
            base + [f"--dataset=npz:{paths['short_labels']}"],
            [f"--dataset=npz:{paths['short_labels']}", "y_train", "(299,) for 300 inputs"],
        ),
        (
            "npz labels out of range",
            base + [f"--dataset=npz:{paths['label_range']}"],
            [f"--dataset=npz:{paths['label_range']}", "label 12 is out of range", "[0, 4)"],
        ),
        (
            "npz float inputs with crop",
            base + [f"--dataset=npz:{paths['mfcc']}", "--student_augment=crop=2"],
            ["--student_augment", "crop", f"--dataset=npz:{paths['mfcc']}", "float32", "cutout"],
        ),
        (
            "npz float inputs with a flipping teacher",
            base + [f"--dataset=npz:{paths['mfcc']}", "--teacher_augment=flip"],
            ["--teacher_augment", "flip", "not images"],
        ),
        (
            "npz on disk",
            base + [f"--dataset=npz:{paths['mfcc']}", "--data_storage=disk"],
            ["--data_storage=disk", "npz", "memory"],
        ),
        (
            "npz resized",
            base + [f"--dataset=npz:{paths['mfcc']}", "--image_size=8"],
            [f"--dataset=npz:{paths['mfcc']}", "--image_size"],
        ),
        ("image_size garbage", base + ["--image_size=big"], ["--image_size", "big"]),
        ("test_fraction 1", base + ["--test_fraction=1"], ["--test_fraction"]),
        ("unknown loss", base + ["--kd_losses=kd,dkdx"], ["--kd_losses", "dkdx"]),
        ("unknown flag", base + ["--studnet=cnn"], ["studnet"]),
        ("unknown strategy", base + ["--distribution=gpu"], ["--distribution", "gpu"]),
        (
            "multi_worker without TF_CONFIG",
            base + ["--distribution=multi_worker"],
            ["--distribution=multi_worker", "TF_CONFIG"],
        ),
        (
            "workdir in use",
            base + [f"--workdir={paths['locked']}"],
            [paths["locked"], "in use by process", "another --workdir"],
        ),
    ]
    with runs.WorkdirLock(paths["locked"]):  # This process holds it; the harness is refused.
        results = _run("kd_keras.main", cases)
    _check(results, cases)


def test_search_and_export_errors(paths):
    base = [
        "--flagfile=kd_keras/configs/nas_smoke.flags",
        f"--project_dir={paths['work']}",
        f"--data_dir={paths['data']}",
    ]
    cases = [
        (
            "corrupt teacher model",
            base + [f"--teacher_model={paths['corrupt']}"],
            ["--teacher_model", paths["corrupt"]],
        ),
        (
            "missing teacher model",
            base + ["--teacher_model=/nonexistent.keras"],
            ["--teacher_model=/nonexistent.keras"],
        ),
        ("two thread counts", base + ["--export_threads=1,2"], ["--export_threads"]),
        ("filters not integers", base + ["--filters=8,wide"], ["--filters", "wide"]),
        ("teacher_args garbage", base + ["--teacher_args=oops"], ["--teacher_args", "oops"]),
        (
            "teacher_args not of the teacher",
            base + ["--teacher_args=depth=10"],
            ["--teacher_args=depth=10", "'cnn' takes no argument 'depth'", "width"],
        ),
        (
            "val_size beyond the training split",
            base + ["--val_size=70000"],
            ["--val_size=70000", "at most 59999"],
        ),
        (
            "hand point outside the space",
            base + ["--final_hand=cnn:0.75"],
            ["--final_hand=cnn:0.75", "stage1_filters=12", "allowed"],
        ),
        (
            "hand family unknown",
            base + ["--final_hand=resnt:1"],
            ["--final_hand=resnt:1", "FAMILY:WIDTH", "MODULE:FUNCTION", "mobilenet_v2"],
        ),
        (
            "hand registry student without a width",
            base + ["--final_hand=cnn:0.25,ds_cnn"],
            ["--final_hand=cnn:0.25,ds_cnn", "needs a width", "ds_cnn:WIDTH"],
        ),
        (
            "hand registry student of a bad width",
            base + ["--final_hand=mobilenet_v2:wide"],
            ["--final_hand=mobilenet_v2:wide", "NAME:WIDTH", "WIDTH > 0"],
        ),
        (
            "hand builder that does not import",
            base + ["--final_hand=no_such_module_here:build"],
            ["--final_hand=no_such_module_here:build", "cannot import module", "PYTHONPATH"],
        ),
        (
            "hand student file missing",
            base + ["--final_hand=/nonexistent/mine.keras"],
            ["--final_hand=/nonexistent/mine.keras", "does not exist"],
        ),
        ("activation unknown", base + ["--activations=relu,gelu"], ["activations", "gelu"]),
        (
            "start point stages",
            base + ["--oracle=evolution", "--start_points=cnn:0.5:x"],
            ["--start_points=cnn:0.5:x", "FAMILY:WIDTH[:STAGES]"],
        ),
        (
            "start point change not in the space",
            base + ["--oracle=evolution", "--start_points=cnn:0.25/stem_padding=full"],
            ["--start_points=cnn:0.25/stem_padding=full", "stem_padding='full'", "allowed"],
        ),
        (
            "start point change of an unknown name",
            base + ["--oracle=evolution", "--start_points=cnn:0.25/stage1_filterz=8"],
            ["--start_points=cnn:0.25/stage1_filterz=8", "'stage1_filterz' is not a hyper"],
        ),
        (
            "start point without evolution",
            base + ["--start_points=cnn:0.5:4"],
            ["--start_points=cnn:0.5:4", "--oracle=evolution"],
        ),
        (
            "retired covering flag",
            base + ["--oracle=evolution", "--evolution_fitness=cover"],
            ["evolution_fitness"],
        ),
        ("image size of zero", base + ["--image_size=0,8"], ["--image_size=0,8", "HEIGHT,WIDTH"]),
    ]
    _check(_run("nas.main", cases), cases)
    base = [f"--out_dir={paths['work']}", f"--data_dir={paths['data']}"]
    cases = [
        (
            "export format int4",
            base + [f"--model={paths['corrupt']}", "--export_formats=int4"],
            ["--export_formats", "int4"],
        ),
        (
            "missing model",
            base + ["--model=/nonexistent.keras"],
            ["--model=/nonexistent.keras"],
        ),
        (
            "model not a .keras archive",
            base + [f"--model={paths['corrupt']}"],
            [f"--model={paths['corrupt']}", "not a .keras archive"],
        ),
        (
            "out_dir is a file",
            [f"--model={paths['corrupt']}", f"--out_dir={paths['file']}"],
            ["--out_dir", paths["file"]],
        ),
        (
            "image size not numbers",
            base + [f"--model={paths['corrupt']}", "--image_size=big"],
            ["--image_size=big", "HEIGHT,WIDTH"],
        ),
    ]
    _check(_run("export.main", cases), cases)
