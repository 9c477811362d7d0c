"""Every flagfile in kd_keras/configs parses into a valid configuration.

A flagfile is an experiment's documentation as much as its input: a typo in a
flag, a value out of range or a NAS path that moved would otherwise surface
only when someone runs the (long) experiment. The pipeline and study configs
are parsed by the real flag definitions in a subprocess (absl flags are
process-global), their models are built, and every study run is planned.
"""

import glob
import os
import subprocess
import sys

import pytest
from conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "kd_keras", "configs", "*.flags")))
# Recipes for the user's own data and teacher (placeholders in the file, given
# on the command line): tests/rgb_folder_test.py checks them on data it makes.
USER_CONFIGS = ("rgb_folder.flags", "rgb_folder_slim.flags")
MAIN_CONFIGS = [
    c
    for c in CONFIGS
    if not os.path.basename(c).startswith("nas_") and os.path.basename(c) not in USER_CONFIGS
]

# The search's flagfiles; nas_rgb_folder.flags is a user recipe (recipe_test.py).
NAS_CONFIGS = [
    c
    for c in CONFIGS
    if os.path.basename(c).startswith("nas_") and os.path.basename(c) != "nas_rgb_folder.flags"
]

NAS_CHECK = r"""
import sys
from absl import flags
from nas import main

for path in sys.argv[1:]:
    flags.FLAGS.unparse_flags()
    main.parse_flags(["check", f"--flagfile={path}", "--project_dir=/nonexistent/never_written"])
    main.configure()  # What nas.main checks before any data: flags, space, oracle, hand students.
    print(f"OK {path}: search")
"""

CHECK = r"""
import sys
from absl import flags
from kd_keras import flags as kd_flags
from kd_keras.app import pipeline
from kd_keras.app.study import runner

for path in sys.argv[1:]:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["check", f"--flagfile={path}", "--workdir=/nonexistent/never_written"])
    cfg = kd_flags.pipeline_config()
    # What the entry point checks before any data: models build (a teacher
    # given by path loads), losses find their layers, every variant applies.
    if kd_flags.mode() == "study":
        study = kd_flags.study_config(cfg)
        runner.validate(study)
        print(f"OK {path}: study, {len(runner.plan(study))} runs")
    else:
        pipeline.validate(cfg)
        print(f"OK {path}: pipeline")
"""


def test_every_config_says_how_to_run_it_and_how_long_it_takes():
    assert CONFIGS
    for path in CONFIGS:
        header = [line for line in open(path) if line.startswith("#")]
        text = "".join(header)
        assert "python -m" in text, f"{path}: no command in its header comment"
        assert "expected time" in text.lower(), f"{path}: no expected time in its header"


@pytest.mark.slow(30)
def test_pipeline_and_study_configs_parse_and_build():
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *MAIN_CONFIGS],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in MAIN_CONFIGS:
        assert f"OK {path}" in proc.stdout


def test_the_check_fails_on_a_bad_config(tmp_path):
    bad = tmp_path / "bad.flags"
    bad.write_text(f"--flagfile={MAIN_CONFIGS[0]}\n--mode=study\n--study_techniques=none,bogus\n")
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, str(bad)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and f"OK {bad}" not in proc.stdout


@pytest.mark.slow(10)
def test_search_configs_parse_and_configure():
    assert NAS_CONFIGS
    proc = run_python(NAS_CHECK, *NAS_CONFIGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in NAS_CONFIGS:
        assert f"OK {path}: search" in proc.stdout
