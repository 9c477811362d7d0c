"""Which ``tf.distribute`` strategy trains, and where each worker writes.

    strategy = distribute.make_strategy("multi_worker")  # First, before any TF op.
    with distribute.worker_workdir(workdir) as mine, strategy.scope():
        ...build, compile and fit; write only under `mine`...

``--batch_size`` is the global batch: every step, the replicas of all workers
together see one batch, each replica its share. Keras splits the batches of a
``tf.data`` pipeline across replicas (``Model.fit`` distributes it); with
:func:`shard_by_data` every worker takes its replicas' shares of the same
global batches (``AutoShardPolicy.DATA``), which is right for pipelines like
ours that are pure functions of (seed, epoch) and read no files.

Multi-worker training reads ``TF_CONFIG`` (the cluster and this process's
task) the standard way. Every worker runs the same program in lockstep; the
chief (task ``chief``, or ``worker`` 0 when the cluster has no chief) writes
into the shared workdir. The others must take part in every save (reading
mirrored and synchronized variables is a collective operation) but their files
are thrown away: each works in a private copy of the workdir (:func:`worker_workdir`,
the ``write_filepath`` pattern of TensorFlow's multi-worker Keras tutorial),
made when it starts, so it reuses and resumes exactly the runs the chief does,
and deleted when it ends.
"""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys

from kd_keras.keras_compat import tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DEFAULT_TIMEOUT_S = 300  # --distribution_timeout: how long workers wait for each other.
# Exit status of a process the watchdog stops (as if killed by SIGKILL).
TIMEOUT_EXIT = 137
WORKER_DIR_PREFIX = ".workertemp_"
ALIVE_FILE = ".alive"  # Locked by the worker whose private workdir holds it.
# Not copied into a worker's private workdir: what only the chief appends to
# (the log), or never reads back (TensorBoard logs, exported files, lock).
_NOT_COPIED = ("log.txt", ".lock", "tensorboard", "tflite", ALIVE_FILE)


def tf_config():
    """``TF_CONFIG`` parsed, or None when it is unset or empty.

    Raises:
      ValueError: it is not a JSON object with a 'cluster'.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e.msg} at {e.pos}).") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError("TF_CONFIG must be a JSON object with a 'cluster' and a 'task'.")
    return config


def task(config=None):
    """(task type, task index) of this process; ('worker', 0) without TF_CONFIG.

    Args:
      config: a parsed TF_CONFIG (default: read from the environment).
    """
    config = tf_config() if config is None else config
    entry = (config or {}).get("task") or {}
    return str(entry.get("type", "worker")), int(entry.get("index", 0))


def is_chief(config=None):
    """True for the process that writes results and checkpoints.

    That is the task of type 'chief', or worker 0 when the cluster has no
    chief; True without TF_CONFIG (a single process).

    Args:
      config: a parsed TF_CONFIG (default: read from the environment).
    """
    config = tf_config() if config is None else config
    if not config:
        return True
    kind, index = task(config)
    if "chief" in config["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0


def make_strategy(name, tpu="", timeout_s=DEFAULT_TIMEOUT_S):
    """The ``tf.distribute`` strategy called `name` (one of :data:`STRATEGIES`).

    'default' is the current strategy (one device, no distribution);
    'mirrored' replicates over this machine's GPUs (one CPU replica without
    GPUs); 'multi_worker' is ``MultiWorkerMirroredStrategy`` over the cluster
    of ``TF_CONFIG`` and must be created before any other TensorFlow
    operation; 'tpu' is ``TPUStrategy`` on the TPU ``TPUClusterResolver``
    finds (`tpu`: its name or address; '' = this TPU VM or ``TPU_NAME``).

    Creating the multi-worker strategy waits for every task of the cluster to
    connect, in TensorFlow's native code (which neither lets Python run nor
    stops on SIGTERM): a :func:`watchdog` process says every 10 s which
    addresses it waits for, and after `timeout_s` seconds ends this process
    with one line naming them.

    Raises:
      ValueError: an unknown name, 'multi_worker' without a usable TF_CONFIG,
        or 'tpu' where no TPU is found; naming --distribution.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--distribution={name}: allowed: {', '.join(STRATEGIES)}.")
    if timeout_s <= 0:
        raise ValueError(f"--distribution_timeout={timeout_s}: must be > 0 seconds.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        try:
            config = tf_config()
        except ValueError as e:
            raise ValueError(f"--distribution=multi_worker: {e}") from None
        if config is None:
            raise ValueError(
                "--distribution=multi_worker needs TF_CONFIG: set it in every worker's "
                'environment to {"cluster": {"worker": ["host:port", ...]}, '
                '"task": {"type": "worker", "index": I}}.'
            )
        kind, index = task(config)
        members = config["cluster"].get(kind)
        if kind not in ("chief", "worker") or not members or not 0 <= index < len(members):
            raise ValueError(
                f"--distribution=multi_worker: TF_CONFIG's task {kind} {index} is not a "
                f"chief or worker of its cluster {config['cluster']}."
            )
        peers = [
            address
            for kind_, members in config["cluster"].items()
            for i, address in enumerate(members)
            if (kind_, i) != (kind, index)
        ]
        with watchdog("the other tasks of the cluster", timeout_s, peers=peers):
            return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"--distribution=tpu: no TPU found ({reason}).") from None
    return tf.distribute.TPUStrategy(resolver)


def shard_by_data(dataset):
    """`dataset` split across workers by element (``AutoShardPolicy.DATA``),
    for training.

    Under a multi-worker strategy Keras then gives every worker its replicas'
    shares of the same global batches; elsewhere the option changes nothing.
    Every batch must split into equal shares, one per replica (see
    ``kd_keras.train.even_batches``): a worker left without examples
    would miss a step the others take.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def write_dir(workdir, config=None):
    """The directory this worker writes to: `workdir` for the chief, else its
    private ``<workdir>/.workertemp_<type>_<index>``."""
    config = tf_config() if config is None else config
    if is_chief(config):
        return workdir
    kind, index = task(config)
    return os.path.join(workdir, f"{WORKER_DIR_PREFIX}{kind}_{index}")


def _ignored(directory, names):
    del directory
    return [n for n in names if n in _NOT_COPIED or n.startswith(WORKER_DIR_PREFIX)]


@contextlib.contextmanager
def worker_workdir(workdir, config=None):
    """Yields the directory this worker reads and writes as its workdir.

    The chief gets `workdir`. Any other worker gets :func:`write_dir`, made
    afresh as a copy of `workdir` (its cached runs, progress files and
    checkpoints; without logs, TensorBoard files and exports), so that it
    reuses and resumes the same runs as the chief; the copy is deleted when
    the block ends normally, and kept (with the worker's log) when it raises.
    """
    mine = write_dir(workdir, config)
    if mine == workdir:
        yield workdir
        return
    shutil.rmtree(mine, ignore_errors=True)
    os.makedirs(mine)
    # Held while this worker lives: the chief deletes only copies nobody holds.
    with open(os.path.join(mine, ALIVE_FILE), "w") as alive:
        fcntl.flock(alive, fcntl.LOCK_EX)
        if os.path.isdir(workdir):
            shutil.copytree(workdir, mine, ignore=_ignored, dirs_exist_ok=True)
        yield mine
    shutil.rmtree(mine, ignore_errors=True)


def remove_worker_dirs(workdir):
    """Deletes the private workdirs left in `workdir` by workers that no
    longer run (a worker killed mid-run cannot delete its own); the chief
    calls it when its run has finished. A worker holds a lock on its copy's
    :data:`ALIVE_FILE` while it runs; copies whose lock is held, or without
    that file, are left alone. Returns the names deleted."""
    if not os.path.isdir(workdir):
        return []
    removed = []
    for name in sorted(n for n in os.listdir(workdir) if n.startswith(WORKER_DIR_PREFIX)):
        path = os.path.join(workdir, name)
        try:
            with open(os.path.join(path, ALIVE_FILE)) as alive:
                fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # Missing (being made, or not a worker's) or held.
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


# What TensorFlow raises in a task when another task of its cluster stops.
LOST_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


@contextlib.contextmanager
def exit_on_lost_peer(resumes, active=True):
    """Turns a lost task of the cluster inside the block into one line on
    stderr and exit status 1, instead of TensorFlow's traceback. `resumes`
    says what a rerun does; nothing is caught unless `active` (multi-worker)."""
    try:
        yield
    except LOST_PEER_ERRORS as e:
        if not active:
            raise
        first = " ".join((getattr(e, "message", "") or str(e)).split())[:200]
        print(
            f"A task of the cluster stopped or cannot be reached ({type(e).__name__}: {first}). "
            f"Start every task again with the same command: {resumes}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


def distributed_role(environ=None):
    """'single', 'chief' or 'worker', from keras-tuner's environment variables.

    keras-tuner runs distributed when ``KERASTUNER_ORACLE_IP`` is set (with
    ``KERASTUNER_ORACLE_PORT`` and ``KERASTUNER_TUNER_ID``); the process whose
    tuner id contains ``chief`` serves the oracle, the others run trials.
    """
    env = os.environ if environ is None else environ
    if "KERASTUNER_ORACLE_IP" not in env:
        return "single"
    return "chief" if "chief" in env.get("KERASTUNER_TUNER_ID", "") else "worker"


# The watchdog: a separate process, since while TensorFlow waits for the
# cluster in native code no Python thread of the waiting process runs.
_WATCHDOG = r"""
import os, select, signal, socket, sys, time
parent, timeout, interval = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
what, peers = sys.argv[4], sys.argv[5:]

def down():
    out = []
    for address in peers:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except (OSError, ValueError):
            out.append(address)
    return out

def interrupted(signum, frame):
    # The waiting process cannot take a signal while TensorFlow waits: stop it.
    print(f"Interrupted while waiting for {what}.", file=sys.stderr, flush=True)
    os.kill(parent, signal.SIGKILL)
    sys.exit(0)

signal.signal(signal.SIGINT, interrupted)
signal.signal(signal.SIGTERM, interrupted)
start = time.monotonic()
while True:
    left = timeout - (time.monotonic() - start)
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, min(interval, left)))
    if ready and not sys.stdin.buffer.read1(1):
        sys.exit(0)  # The wait ended (or the waiting process is gone).
    waited = time.monotonic() - start
    missing = down()
    if waited >= timeout:
        print(
            f"Gave up after {waited:.0f} s waiting for {what}; not listening: "
            f"{', '.join(missing) or 'none (they started but did not join)'}. Start every task "
            "with the same TF_CONFIG cluster, or raise --distribution_timeout.",
            file=sys.stderr, flush=True,
        )
        os.kill(parent, signal.SIGKILL)
        sys.exit(0)
    print(
        f"  ... waiting for {what}: {waited:.0f} s of {timeout:.0f} s "
        f"(--distribution_timeout); not listening yet: {', '.join(missing) or 'none'}",
        file=sys.stderr, flush=True,
    )
"""


@contextlib.contextmanager
def watchdog(what, timeout_s, interval_s=10.0, peers=()):
    """Bounds a wait that may block in native code: a separate process prints
    a progress line every `interval_s` seconds and, if the block has not
    ended after `timeout_s` seconds, prints one line on stderr and kills this
    process (exit status 137, as SIGKILL).

    Args:
      what: what is waited for, as the lines say it.
      timeout_s: seconds before giving up (> 0).
      interval_s: seconds between progress lines (at most half of
        `timeout_s`, so a short wait says its progress once too).
      peers: "host:port" addresses the progress lines check for a listener.
    """
    interval_s = min(float(interval_s), float(timeout_s) / 2)
    process = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout_s), str(interval_s), what]
        + list(peers),
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        process.stdin.close()
        process.wait()
