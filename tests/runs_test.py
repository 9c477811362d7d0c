"""runs: stable hashes, atomic writes that leave nothing half-written, readable files."""

import os
import stat
import subprocess
import sys

import pytest

from kd_keras import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_a_second_process_is_refused_a_locked_workdir_until_it_is_released(tmp_path):
    workdir = str(tmp_path / "work")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from kd_keras import runs\n"
            f"with runs.WorkdirLock({workdir!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runs.WorkdirLockedError, match=f"process {holder.pid}"):
            with runs.WorkdirLock(workdir):
                pass
    finally:
        holder.kill()  # A killed holder leaves no stale lock behind.
        holder.wait()
    with runs.WorkdirLock(workdir):
        pass


def test_workdir_shared_by_one_job_and_refused_to_others(tmp_path):
    workdir = str(tmp_path)
    with runs.WorkdirLock(workdir, group="study A"), runs.WorkdirLock(workdir, group="study A"):
        with pytest.raises(runs.WorkdirLockedError, match="job 'study A'"):
            runs.WorkdirLock(workdir).__enter__()
        with pytest.raises(runs.WorkdirLockedError, match="job 'study A'"):
            runs.WorkdirLock(workdir, group="study B").__enter__()
    with runs.WorkdirLock(workdir, group="study B"):  # A has ended: B may start.
        with pytest.raises(runs.WorkdirLockedError):
            runs.WorkdirLock(workdir, group="study A").__enter__()
    with runs.WorkdirLock(workdir):
        with pytest.raises(runs.WorkdirLockedError, match=f"process {os.getpid()}"):
            runs.WorkdirLock(workdir, group="study A").__enter__()
    with runs.WorkdirLock(workdir, group="study A"):
        pass


def test_run_lock_makes_the_second_taker_wait(tmp_path):
    import threading

    directory = str(tmp_path / "runs" / "base-kd-s0-abc")
    order = []
    first = runs.RunLock(directory).__enter__()
    # Hidden beside the run: a listing or glob of run directories does not see it.
    assert os.listdir(tmp_path / "runs") == [".base-kd-s0-abc.lock"]
    waiter = threading.Thread(
        target=lambda: (runs.RunLock(directory).__enter__(), order.append("second"))
    )
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and order == []  # Blocked while the first holds it.
    order.append("first done")
    first.__exit__(None, None, None)
    waiter.join(timeout=5)
    assert order == ["first done", "second"]
