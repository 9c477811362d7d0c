"""--distribution: strategies, chief election, worker directories, and training
that gives the same model on one device, on two replicas and on two workers.

Two replicas in one process need two logical CPUs configured before
TensorFlow starts, so that check runs in a subprocess (this file is its
script). The two workers are two ``python -m kd_keras.main`` processes on
127.0.0.1 with their own TF_CONFIG.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_image_folder

from kd_keras import distill, distribute, runs
from kd_keras import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cluster(*kinds):
    """A TF_CONFIG cluster of `kinds` ('chief'/'worker'), one address each."""
    cluster = {}
    for i, kind in enumerate(kinds):
        cluster.setdefault(kind, []).append(f"127.0.0.1:{2000 + i}")
    return cluster


@pytest.mark.parametrize(
    "kinds, task, chief",
    [
        (None, None, True),
        (("worker", "worker"), ("worker", 0), True),
        (("worker", "worker"), ("worker", 1), False),
        (("chief", "worker"), ("chief", 0), True),
        (("chief", "worker"), ("worker", 0), False),
    ],
)
def test_is_chief(kinds, task, chief, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if kinds is not None:
        config = {"cluster": _cluster(*kinds), "task": {"type": task[0], "index": task[1]}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.is_chief() is chief
    assert (distribute.write_dir("/w") == "/w") is chief


def test_make_strategy_errors_name_the_flag(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.make_strategy("default").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"--distribution=gpu: allowed: default, mirrored"):
        distribute.make_strategy("gpu")
    with pytest.raises(ValueError, match=r"--distribution=multi_worker needs TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ValueError, match=r"--distribution=multi_worker: TF_CONFIG is not valid"):
        distribute.make_strategy("multi_worker")
    config = {"cluster": _cluster("worker", "worker"), "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with pytest.raises(ValueError, match=r"task worker 2 is not a chief or worker"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match=r"--distribution=tpu: no TPU found"):
        distribute.make_strategy("tpu")


def test_a_non_chief_works_in_a_copy_it_deletes(tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    run = workdir / "runs" / "base-abc"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tensorboard").mkdir()
    (run / "progress.json").write_text('{"epochs_done": 1}')
    (run / "checkpoints" / "epoch-1.index").write_text("x")
    (workdir / "log.txt").write_text("the chief's log")
    (workdir / ".workertemp_worker_2").mkdir()
    config = {"cluster": _cluster("worker", "worker"), "task": {"type": "worker", "index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))

    with distribute.worker_workdir(str(workdir)) as mine:
        assert mine == str(workdir / ".workertemp_worker_1")
        copy = os.path.join(mine, "runs", "base-abc")
        # What resuming reads is there; logs and other workers' copies are not.
        assert runs.read_json(os.path.join(copy, "progress.json")) == {"epochs_done": 1}
        assert os.path.exists(os.path.join(copy, "checkpoints", "epoch-1.index"))
        assert not os.path.exists(os.path.join(copy, "tensorboard"))
        assert sorted(os.listdir(mine)) == [distribute.ALIVE_FILE, "runs"]
        runs.write_json(os.path.join(copy, "progress.json"), {"epochs_done": 2})
    assert not os.path.exists(mine)
    assert runs.read_json(str(run / "progress.json")) == {"epochs_done": 1}  # Untouched.

    with pytest.raises(RuntimeError), distribute.worker_workdir(str(workdir)) as mine:
        raise RuntimeError("failed")
    assert os.path.isdir(mine)  # Kept with its log for a look.

    monkeypatch.delenv("TF_CONFIG")
    with distribute.worker_workdir(str(workdir)) as mine:
        assert mine == str(workdir)


def test_the_chief_removes_workers_dirs_left_by_killed_workers(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    config = {"cluster": _cluster("worker", "worker", "worker"), "task": {"type": "worker"}}
    dead = tmp_path / ".workertemp_worker_1"
    (dead / "runs").mkdir(parents=True)
    (dead / distribute.ALIVE_FILE).write_text("")  # Its worker died: nobody holds the lock.
    config["task"]["index"] = 2
    with distribute.worker_workdir(str(tmp_path), config) as alive:
        assert distribute.remove_worker_dirs(str(tmp_path)) == [".workertemp_worker_1"]
        assert os.path.isdir(alive)  # A running worker's copy stays.
    assert sorted(os.listdir(tmp_path)) == ["runs"]


@pytest.mark.slow(20)
def test_a_task_whose_peer_never_starts_gives_up_with_one_line(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    tf_config = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.main",
            "--flagfile=kd_keras/configs/smoke.flags",
            "--distribution=multi_worker",
            "--distribution_timeout=4",
            f"--workdir={tmp_path}",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CONFIG=json.dumps(tf_config)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    progress = [x for x in lines if "waiting for the other tasks of the cluster" in x]
    assert progress and cluster["worker"][1] in progress[0] and "of 4 s" in progress[0]
    assert lines[-1].startswith("Gave up after 4 s waiting for the other tasks"), lines[-1]
    assert cluster["worker"][1] in lines[-1] and "--distribution_timeout" in lines[-1]


def test_batches_padded_to_an_even_share_per_replica():
    from kd_keras.keras_compat import tf

    data = tf.data.Dataset.range(10).batch(7)  # Batches of 7 and 3.
    assert [len(b) for b in train_lib.even_batches(data)] == [8, 4]
    padded = [b.numpy().tolist() for b in train_lib.even_batches(data, 4)]
    assert padded == [[0, 1, 2, 3, 4, 5, 6, 0], [7, 8, 9, 7]]


# ---------------------------------------------------------------------------
# Two replicas in one process: the same weights as one device.

SCRIPT_REPLICAS = "replicas"


def _train_both_ways(out):
    """Runs in a subprocess: trains a plain and a distilled dense student on
    one device and on two CPU replicas; saves the four weight lists."""
    from kd_keras.keras_compat import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from conftest import tiny_dataset

    from kd_keras import data as data_lib
    from kd_keras.keras_compat import keras

    # Batches of 16, 16 and 8: no padding, on one device or two (see even_batches).
    data = tiny_dataset(40, shape=(6, 6, 1), classes=3)
    config = train_lib.TrainConfig(epochs=2, optimizer="sgd", learning_rate=0.5, seed=1)
    kd = distill.KDConfig(alpha=0.3, temperature=2.0)

    def dense(seed, name):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 1))
        x = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(x), name=name)

    weights = {}
    strategies = {
        "one": tf.distribute.get_strategy(),
        "two": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    for key, strategy in strategies.items():
        with strategy.scope():
            for mode in ("plain", "kd"):
                datasets = data_lib.make_datasets(data, 16, seed=1)
                student = dense(1, "student")
                teacher = dense(2, "teacher") if mode == "kd" else None
                run_dir = os.path.join(os.path.dirname(out), f"{key}-{mode}")
                train_lib.fit(student, datasets, config, run_dir, teacher, kd, verbose=0)
                weights[f"{key}-{mode}"] = np.concatenate(
                    [w.ravel() for w in student.get_weights()]
                )
        assert strategy.num_replicas_in_sync == {"one": 1, "two": 2}[key]
    np.savez(out, **weights)


def test_two_replicas_train_the_weights_of_one_device(tmp_path):
    out = str(tmp_path / "weights.npz")
    proc = subprocess.run(
        [sys.executable, __file__, SCRIPT_REPLICAS, out],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as w:
        for mode in ("plain", "kd"):
            one, two = w[f"one-{mode}"], w[f"two-{mode}"]
            # SGD: a loss scaled wrong by the replica count would double the steps.
            np.testing.assert_allclose(two, one, atol=2e-5, err_msg=mode)
        assert np.abs(w["one-kd"] - w["one-plain"]).max() > 1e-2  # The teacher mattered.


# ---------------------------------------------------------------------------
# Two workers through the entry point.


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _main_args(images, workdir):
    return [
        sys.executable,
        "-m",
        "kd_keras.main",
        f"--dataset=dir:{images}",
        "--val_size=0",
        "--batch_size=8",
        "--teacher=cnn",
        "--teacher_args=width=0.25",
        "--teacher_epochs=1",
        "--teacher_warmup=0",
        "--teacher_augment=none",
        "--student=cnn",
        "--student_args=width=0.25",
        "--student_epochs=2",
        "--kd=on",
        "--export_formats=",
        "--verbose=0",
        f"--workdir={workdir}",
    ]


def _models(workdir):
    results = runs.read_json(os.path.join(workdir, "results.json"))
    return {row["name"]: row for row in results["models"]}


def _weights(row):
    from kd_keras.keras_compat import keras

    model = keras.models.load_model(runs.saved_model_path(row["run_dir"]), compile=False)
    return np.concatenate([w.ravel() for w in model.get_weights()])


@pytest.mark.slow(50)
def test_two_workers_train_one_model_like_one_process(tmp_path):
    # 36 training images: batches of 8 and one of 4, none padded on one or two workers.
    images = write_image_folder(str(tmp_path / "images"), per_class=15)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    single = str(tmp_path / "single")
    proc = subprocess.run(
        _main_args(images, single), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    shared = str(tmp_path / "shared")  # One workdir for both workers.
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        workers.append(
            subprocess.Popen(
                _main_args(images, shared) + ["--distribution=multi_worker"],
                cwd=ROOT,
                env=dict(env, TF_CONFIG=json.dumps(tf_config)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=300)
            assert worker.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()

    digests = [
        json.loads(line.split(":", 1)[1])
        for out in outputs
        for line in out.splitlines()
        if line.startswith("Weights digests:")
    ]
    assert len(digests) == 2 and digests[0] == digests[1]  # In sync to the last bit.
    assert "Results written to" in outputs[0] and "worker 1 done" in outputs[1]
    # Only the chief's files remain: the other worker deleted its copy.
    assert not [n for n in os.listdir(shared) if n.startswith(distribute.WORKER_DIR_PREFIX)]
    multi, alone = _models(shared), _models(single)
    assert multi["none-kd-s0"]["weights_digest"] == digests[0]["none-kd-s0"]
    for name in ("teacher0", "none-kd-s0"):
        # Same global batches; only batch normalization sees half batches per
        # replica, so the weights differ a little, not the accuracy.
        a, b = _weights(alone[name]), _weights(multi[name])
        assert np.linalg.norm(a - b) < 0.25 * np.linalg.norm(a), name
        assert abs(alone[name]["test_accuracy"] - multi[name]["test_accuracy"]) <= 0.2, name


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if sys.argv[1] == SCRIPT_REPLICAS:
        _train_both_ways(sys.argv[2])
