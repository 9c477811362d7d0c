"""The quiet console: native output captured into the log. (That a real run's
console holds only stage lines, epochs and results, with the library chatter in
log.txt, is checked on the smoke run in main_test.)"""

import os

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
