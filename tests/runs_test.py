"""runs: stable hashes, atomic writes that leave nothing half-written, readable files."""

import os
import stat

import pytest

from kd_keras import runs


def test_config_hash_ignores_key_order_and_sees_values():
    assert runs.config_hash({"a": 1, "b": 2}) == runs.config_hash({"b": 2, "a": 1})
    assert runs.config_hash({"a": 1}) != runs.config_hash({"a": 2})


def test_written_files_have_ordinary_permissions(tmp_path):
    path = tmp_path / "report.md"
    runs.write_text(str(path), "hello")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives, for comparison
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    runs.write_json(str(path), {"done": 1})
    with pytest.raises(UnicodeEncodeError):  # fails inside the write, after the temp file exists
        runs.write_text(str(path), "half written \udcff")
    assert runs.read_json(str(path)) == {"done": 1}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
