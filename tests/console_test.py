"""The quiet console: stage lines on screen, library chatter in log.txt."""

import os
import subprocess
import sys

import pytest

from kd_keras import console
from kd_keras import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# As in main_test: CI sets KD_KERAS_REQUIRE_DATA=1 so that missing data fails.
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)

CHATTER = ("cuInit", "fully_quantize", "HDF5", "WARNING:", "W0000", "E0000")


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_smoke_run_console_is_quiet_and_log_holds_the_chatter(tmp_path):
    workdir = str(tmp_path / "work")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.main",
            "--flagfile=kd_keras/configs/smoke.flags",
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    screen = proc.stdout + proc.stderr
    for word in CHATTER:
        assert word not in screen, f"{word!r} on the console:\n{screen}"
    for line in (
        "[1/5] teacher0 (resnet)",
        "[4/5] student prune+qat, no KD",
        "[5/5] student prune+qat, KD",
        "  ... training prune+qat-kd-s0: 1 epoch(s)",
        "  ... exporting to TFLite: float32, int8",
    ):
        assert line in proc.stdout.splitlines(), proc.stdout
    log = open(os.path.join(workdir, console.LOG_NAME)).read()
    for word in ("cuInit", "fully_quantize", "HDF5"):
        assert word in log


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
