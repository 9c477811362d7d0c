"""The quiet console: native output captured into the log. (That a real run's
console holds only stage lines, epochs and results, with the library chatter in
log.txt, is checked on the smoke run in main_test.)"""

import os
import subprocess
import sys

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


# Each entry point with its long work replaced by a Ctrl-C.
INTERRUPT = r"""
import sys, types
from absl import app
module = __import__(sys.argv[1], fromlist=["main"])

def interrupt(*args, **kwargs):
    raise KeyboardInterrupt

if sys.argv[1] == "kd_keras.main":
    module.run = interrupt
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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = "--project_dir" if module == "nas.main" else "--workdir"
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPT, module, *flags, f"{out}={tmp_path}"],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Interrupted: ") and "rerun the same command" in last, last
    assert "Traceback" not in proc.stderr
