"""The quiet console: native output captured into the log. (That a real run's
console holds only stage lines, epochs and results, with the library chatter in
log.txt, is checked on the smoke run in main_test.)"""

import errno
import json
import os
import socket
import subprocess
import sys
import zipfile

import pytest

from kd_keras import console


def test_capture_native_output_sends_fd_writes_to_the_log(tmp_path, capfd):
    log = str(tmp_path / "log.txt")
    with console.capture_native_output(log):
        os.write(2, b"native stderr line\n")
        os.write(1, b"native stdout line\n")
    os.write(2, b"after the block\n")
    text = open(log).read()
    assert "native stderr line" in text and "native stdout line" in text
    assert "after the block" not in text
    out, err = capfd.readouterr()
    assert "native" not in out + err and "after the block" in err


def test_capture_native_output_keeps_exceptions_and_restores_fds(tmp_path, capfd):
    log = str(tmp_path / "log.txt")
    with pytest.raises(ValueError, match="converter said no"):
        with console.capture_native_output(log):
            raise ValueError("converter said no")
    os.write(1, b"stdout is back\n")
    assert "stdout is back" in capfd.readouterr().out
    assert "stdout is back" not in open(log).read()


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    with pytest.raises(SystemExit) as stop:
        with console.exit_on_interrupt("rerun to go on."):
            raise KeyboardInterrupt
    assert stop.value.code == console.INTERRUPTED_EXIT == 130
    assert capsys.readouterr().err == "Interrupted: rerun to go on.\n"


def test_ctrl_c_in_training_says_the_epoch_a_rerun_resumes_from(tmp_path, capsys):
    from conftest import tiny_dataset

    from kd_keras import data as data_lib
    from kd_keras import models
    from kd_keras import train as train_lib
    from kd_keras.keras_compat import keras

    class StopAtEpoch2(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    datasets = data_lib.make_datasets(tiny_dataset(16, (8, 8, 1), 3), 8, seed=0)
    student = models.build("cnn", (8, 8, 1), 3, width=0.25)
    with pytest.raises(SystemExit):
        with console.exit_on_interrupt("rerun to go on."):
            train_lib.fit(
                student,
                datasets,
                train_lib.TrainConfig(epochs=3, warmup_epochs=0),
                str(tmp_path / "student-x"),
                extra_callbacks=[StopAtEpoch2()],
                verbose=0,
            )
    assert capsys.readouterr().err == (
        "Interrupted: rerun to go on. (student-x saved at epoch 1 of 3; a rerun resumes it "
        "from epoch 2)\n"
    )
    console.note_saved(None)


# Each entry point with its long work replaced by a Ctrl-C, or with
# KD_FAULT=full_disk by a full disk met while writing a model card (an OSError
# with errno ENOSPC, and another error raised while handling it).
INTERRUPT = r"""
import errno, os, sys, types
from absl import app
module = __import__(sys.argv[1], fromlist=["main"])

def interrupt(*args, **kwargs):
    if os.environ.get("KD_FAULT") == "lost_peer":
        import tensorflow as tf
        message = "Collective ops is aborted by: task 1 is unhealthy"
        raise tf.errors.UnavailableError(None, None, message)
    if os.environ.get("KD_FAULT") != "full_disk":
        raise KeyboardInterrupt
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/full/disk/student.card.json")
    except OSError:
        raise RuntimeError("the model card was not written")

if sys.argv[1] == "kd_keras.main":
    module.run = interrupt
elif sys.argv[1] == "export.main":
    module.export.export_model = interrupt
else:
    stub = types.SimpleNamespace(
        sample_within_budget=lambda: False, get_teacher=lambda: None,
        remaining_trials=1, search=interrupt, oracle=None,
    )
    module.make_search = lambda *args, **kwargs: stub
app.run(module.main, argv=["prog"] + sys.argv[2:], flags_parser=module.parse_flags)
"""


@pytest.mark.parametrize(
    "module, flags",
    [
        ("kd_keras.main", ["--flagfile=kd_keras/configs/smoke.flags"]),
        ("nas.main", ["--flagfile=kd_keras/configs/nas_smoke.flags"]),
    ],
)
def test_entry_points_stop_on_ctrl_c_with_one_line(tmp_path, module, flags):
    proc = _run_entry_point(tmp_path, module, flags)
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Interrupted: ") and "rerun the same command" in last, last
    assert "Traceback" not in proc.stderr


def _run_entry_point(tmp_path, module, flags, fault="interrupt", env=None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {"nas.main": "--project_dir", "export.main": "--out_dir"}.get(module, "--workdir")
    return subprocess.run(
        [sys.executable, "-c", INTERRUPT, module, *flags, f"{out}={tmp_path}"],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root, KD_FAULT=fault, **(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _full_disk(path="/full/disk/card.json", code=errno.ENOSPC):
    try:
        raise OSError(code, os.strerror(code), path)
    except OSError:
        raise RuntimeError("the model card was not written")  # noqa: B904 - chained as a rewrite would.


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_naming_the_path(capsys, code):
    with pytest.raises(SystemExit) as stop:
        with console.exit_on_full_disk("rerun to go on."):
            _full_disk(code=code)
    assert stop.value.code == console.FULL_DISK_EXIT != 0
    assert capsys.readouterr().err == (
        f"{os.strerror(code)}: /full/disk/card.json. Once space is freed: rerun to go on.\n"
    )


def test_other_errors_pass_a_full_disk_guard_unchanged():
    with pytest.raises(PermissionError):
        with console.exit_on_full_disk("rerun to go on."):
            raise PermissionError(errno.EACCES, "Permission denied", "/x")
    with pytest.raises(RuntimeError, match="no disk here"):
        with console.exit_on_full_disk("rerun to go on."):
            raise RuntimeError("no disk here")


@pytest.mark.parametrize(
    "module, flags",
    [
        ("kd_keras.main", ["--flagfile=kd_keras/configs/smoke.flags"]),
        ("nas.main", ["--flagfile=kd_keras/configs/nas_smoke.flags"]),
        ("export.main", ["--model=MODEL", "--dataset=none"]),
    ],
)
def test_entry_points_stop_on_a_full_disk_with_one_line(tmp_path, module, flags):
    model = tmp_path / "student.keras"
    with zipfile.ZipFile(model, "w") as archive:  # Passes the check of --model's kind.
        archive.writestr("config.json", "{}")
    flags = [flag.replace("MODEL", str(model)) for flag in flags]
    proc = _run_entry_point(tmp_path / "out", module, flags, fault="full_disk")
    assert proc.returncode == console.FULL_DISK_EXIT, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("No space left on device: /full/disk/student.card.json. "), last
    assert "Once space is freed: " in last and "rerun the same command" in last, last
    assert "Traceback" not in proc.stderr


def test_a_lost_task_of_the_cluster_is_one_line(tmp_path):
    # A one-task cluster: the strategy starts without waiting for anyone.
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    tf_config = {"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}}
    proc = _run_entry_point(
        tmp_path,
        "kd_keras.main",
        ["--flagfile=kd_keras/configs/smoke.flags", "--distribution=multi_worker"],
        fault="lost_peer",
        env={"TF_CONFIG": json.dumps(tf_config)},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("A task of the cluster stopped or cannot be reached (Unavailable"), last
    assert "unhealthy" in last and "rerun the same command" in last, last
    assert "Traceback" not in proc.stderr
