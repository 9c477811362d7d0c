"""Training on odd-sized batches must not crash natively.

Under oneDNN the gradients of the resnet teacher's 1x1 stride-2 projection
convolutions corrupt the heap when a batch has an odd size (the process aborts
or segfaults in some runs, not all). ``train_lib.fit`` pads odd batches; each
run here trains the smoke teacher on 21 examples in batches of 3 (seven odd
batches per epoch) several times, since the crash is intermittent: a fresh
model and pipelines each time, all in one child process, which a native crash
kills (exit code negative) without taking the test process with it.
"""

import os

import pytest
from conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 4
SCRIPT = """
import sys, tempfile
import numpy as np
from kd_keras import data as data_lib, models
from kd_keras import train as train_lib
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (21, 28, 28, 1)).astype(np.uint8)
y = np.arange(21) % 10
data = data_lib.Dataset("odd", x, y, x[:0], y[:0], x, y, num_classes=10)
for run in range(int(sys.argv[1])):
    datasets = data_lib.make_datasets(data, batch_size=3)
    model = models.build("resnet", (28, 28, 1), 10, depth=10, width=0.5, stem_stride=2)
    out = train_lib.fit(model, datasets, train_lib.TrainConfig(epochs=2, optimizer="sgd"),
                       tempfile.mkdtemp(), verbose=0)
    assert len(out["history"]["loss"]) == 2
    print("trained", run, flush=True)
"""


@pytest.mark.slow(10)
def test_odd_batches_train_without_native_crash():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # the crash needs oneDNN on (the default)
    proc = run_python(SCRIPT, str(RUNS), env=env)
    trained = proc.stdout.count("trained")
    assert proc.returncode == 0, (
        f"exit code {proc.returncode} (negative: killed by a signal) after {trained} of "
        f"{RUNS} runs:\n{proc.stderr[-2000:]}"
    )
    assert trained == RUNS
