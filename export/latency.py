"""A latency protocol that holds still: interleaved rounds until the median settles.

Timing runs in its own process (:func:`measure_files` starts this file as a
script with ``subprocess``; it imports only numpy and ``ai_edge_litert``), never
beside training or conversion. In that process every model measured together
gets its own interpreter, and

1. each model is invoked ``warmup`` times, round by round (untimed);
2. then one timed ``invoke()`` per model per round, the order rotating by one
   place each round, so drift (frequency scaling, a neighbour's load) falls
   on all of them alike;
3. after ``min_runs`` rounds, and every ``check_every`` rounds after that,
   the distribution-free 95% confidence interval of each model's median (the
   order statistics ``x[k]`` and ``x[n-1-k]`` with
   ``k = floor((n - 1.96 sqrt(n)) / 2)``) is computed; timing stops when both
   ends of every interval lie within ``rel_ci`` (2%) of its median, or at
   ``max_runs`` rounds (then ``latency_converged`` is False).

The timing process pins itself to as many fixed CPUs as it uses threads
(:func:`pin_cpus`), so the scheduler cannot move the loop between cores.

An identity model with the same input (one RESHAPE op) is measured in the
same rounds: its median is the interpreter's fixed per-call cost (Python
binding, ``invoke()`` dispatch), reported as ``overhead_us_median``, and each
model's ``latency_us_net_median`` is its median minus that.

:func:`run_protocol` is the pure part (a timer is injected, so tests use a
stub); :func:`measure_files` is what the exporter calls.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

DEFAULT_MIN_RUNS = 100
DEFAULT_MAX_RUNS = 5000
DEFAULT_WARMUP = 20
DEFAULT_REL_CI = 0.02
DEFAULT_CHECK_EVERY = 50
IDENTITY = "identity"
_Z95 = 1.959964


class LatencyError(RuntimeError):
    """The timing process failed; the message holds its error output."""


# ----------------------------------------------------------------------------
# Statistics


def median_ci(samples, z=_Z95):
    """Distribution-free confidence interval of the median (order statistics).

    Args:
      samples: the measurements.
      z: normal quantile of the confidence level (1.96 for 95%).

    Returns:
      (low, high); (min, max) when there are too few samples for an interval.
    """
    ordered = sorted(samples)
    n = len(ordered)
    k = int(math.floor((n - z * math.sqrt(n)) / 2.0))
    if k < 0:
        return ordered[0], ordered[-1]
    return ordered[k], ordered[n - 1 - k]


def ci_within(samples, rel_ci):
    """True when both ends of the median's 95% CI lie within rel_ci of the median."""
    median = statistics.median(samples)
    low, high = median_ci(samples)
    return median > 0 and max(median - low, high - median) <= rel_ci * median


def summarize(samples):
    """Median, p10/p90, IQR, CV and CI of microsecond samples (rounded to 0.01)."""
    times = np.asarray(samples, dtype=np.float64)
    p10, p25, p75, p90 = np.percentile(times, [10, 25, 75, 90])
    median = float(np.median(times))
    mean = float(times.mean())
    low, high = median_ci(samples)
    return {
        "latency_us_median": round(median, 2),
        "latency_us_p10": round(float(p10), 2),
        "latency_us_p90": round(float(p90), 2),
        "latency_us_iqr": round(float(p75 - p25), 2),
        "latency_us_mean": round(mean, 2),
        "latency_us_std": round(float(times.std()), 2),
        "latency_us_min": round(float(times.min()), 2),
        "latency_cv": round(float(times.std() / mean), 4) if mean else 0.0,
        "latency_us_ci95": [round(float(low), 2), round(float(high), 2)],
        "latency_runs": len(samples),
    }


# ----------------------------------------------------------------------------
# The protocol


def perf_timer(call):
    """Microseconds that `call()` takes (``perf_counter_ns``)."""
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1000.0


def round_order(names, round_index):
    """The order of round `round_index`: `names` rotated by that many places."""
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def run_protocol(
    calls,
    timer=perf_timer,
    warmup=DEFAULT_WARMUP,
    min_runs=DEFAULT_MIN_RUNS,
    max_runs=DEFAULT_MAX_RUNS,
    rel_ci=DEFAULT_REL_CI,
    check_every=DEFAULT_CHECK_EVERY,
):
    """Times several callables interleaved, round by round, until medians settle.

    Args:
      calls: {name: zero-argument callable}, in a fixed order.
      timer: ``timer(call) -> microseconds``; the default times one call.
      warmup: untimed rounds first.
      min_runs: timed rounds before the first stopping check (>= 1).
      max_runs: cap on timed rounds (>= min_runs).
      rel_ci: stop when every median's 95% CI lies within this fraction of it.
      check_every: rounds between stopping checks after min_runs.

    Returns:
      {name: summarize(...) + latency_converged}; every entry has the same
      number of runs.

    Raises:
      ValueError: no calls or inconsistent run counts.
    """
    names = list(calls)
    if not names:
        raise ValueError("run_protocol needs at least one callable.")
    if not 1 <= min_runs <= max_runs or warmup < 0 or check_every < 1 or rel_ci <= 0:
        raise ValueError(
            f"Need 1 <= min_runs <= max_runs, warmup >= 0, check_every >= 1 and rel_ci > 0; "
            f"got min_runs={min_runs}, max_runs={max_runs}, warmup={warmup}, "
            f"check_every={check_every}, rel_ci={rel_ci}."
        )
    for index in range(int(warmup)):
        for name in round_order(names, index):
            calls[name]()
    samples = {name: [] for name in names}
    converged = False
    rounds = 0
    while rounds < max_runs:
        for name in round_order(names, rounds):
            samples[name].append(timer(calls[name]))
        rounds += 1
        due = rounds >= min_runs and (rounds - min_runs) % check_every == 0
        if due and all(ci_within(s, rel_ci) for s in samples.values()):
            converged = True
            break
    return {name: {**summarize(s), "latency_converged": converged} for name, s in samples.items()}


# ----------------------------------------------------------------------------
# Interpreters (in the timing process)


def quantize_input(x, detail):
    """Float input -> the input tensor's dtype (quantized when it is integer)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    if not scale:
        raise ValueError(f"Integer input tensor {detail['name']!r} has no quantization scale.")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _interpreter_call(path, example, threads, xnnpack):
    """(invoke callable, delegated node count) for one model file."""
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(
        model_path=path, num_threads=int(threads), experimental_op_resolver_type=resolver
    )
    inp = interpreter.get_input_details()[0]
    shape = [1] + [int(d) for d in inp["shape"][1:]]
    if list(inp["shape"]) != shape:
        interpreter.resize_tensor_input(inp["index"], shape)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    batch = np.asarray(example, dtype=np.float32).reshape(shape)
    interpreter.set_tensor(inp["index"], quantize_input(batch, inp))
    delegated = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())  # noqa: SLF001
    return interpreter.invoke, int(delegated)


def pin_cpus(threads, available=None):
    """Pins this process to `threads` fixed CPUs (the highest-numbered it may
    use) and returns them; an empty list where the OS cannot pin.

    A timing loop that the scheduler moves between cores, or that shares one
    with its parent, lands in a slow mode: on this project's 2-core machine,
    five back-to-back medians of one file spread 1.18x unpinned and 1.006x
    pinned (``bench/latency_stability.py``).
    """
    if not hasattr(os, "sched_setaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0) if available is None else available)
    chosen = cpus[-max(1, min(int(threads), len(cpus))) :]
    os.sched_setaffinity(0, chosen)
    return chosen


def _child_main():
    """Reads a JSON job on stdin, times it, writes the JSON result on stdout."""
    job = json.load(sys.stdin)
    cpus = pin_cpus(job["threads"])
    example = np.load(job["example"])
    calls, delegated = {}, {}
    for name, path in job["models"].items():
        calls[name], delegated[name] = _interpreter_call(
            path, example, job["threads"], job["xnnpack"]
        )
    figures = run_protocol(
        calls,
        warmup=job["warmup"],
        min_runs=job["min_runs"],
        max_runs=job["max_runs"],
        rel_ci=job["rel_ci"],
        check_every=job["check_every"],
    )
    for name in figures:
        figures[name]["delegated_nodes"] = delegated[name]
        figures[name]["pinned_cpus"] = cpus
    json.dump(figures, sys.stdout)


# ----------------------------------------------------------------------------
# The parent side


def measure_files(
    models,
    example,
    identity_path=None,
    threads=1,
    xnnpack=True,
    warmup=DEFAULT_WARMUP,
    min_runs=DEFAULT_MIN_RUNS,
    max_runs=DEFAULT_MAX_RUNS,
    rel_ci=DEFAULT_REL_CI,
    check_every=DEFAULT_CHECK_EVERY,
    timeout=900,
):
    """Times ``.tflite`` files together in a fresh process (see the module docstring).

    Args:
      models: {name: .tflite path}; measured interleaved in this order.
      example: one preprocessed float32 input (the batch dimension is added);
        integer-input models get it quantized with their scale and zero point.
      identity_path: identity model with the same input, measured alongside
        (as IDENTITY); None: no overhead figures.
      threads, xnnpack: interpreter threads and XNNPack delegate.
      warmup, min_runs, max_runs, rel_ci, check_every: see :func:`run_protocol`.
      timeout: seconds before the timing process is abandoned.

    Returns:
      {name: figures}: latency_us_{median,p10,p90,iqr,mean,std,min}, latency_cv,
      latency_us_ci95, latency_runs, latency_converged, delegated_nodes,
      warmup_runs, threads, xnnpack, latency_ci_target, and with an identity
      model overhead_us_median and latency_us_net_median.

    Raises:
      LatencyError: the timing process failed or timed out.
      ValueError: `models` is empty or holds the reserved name IDENTITY.
    """
    if not models or IDENTITY in models:
        raise ValueError(f"models must be non-empty and not use the name {IDENTITY!r}.")
    paths = dict(models)
    if identity_path is not None:
        paths[IDENTITY] = identity_path
    with tempfile.TemporaryDirectory() as tmp:
        example_path = os.path.join(tmp, "example.npy")
        np.save(example_path, np.asarray(example, dtype=np.float32))
        job = {
            "models": {k: os.path.abspath(v) for k, v in paths.items()},
            "example": example_path,
            "threads": int(threads),
            "xnnpack": bool(xnnpack),
            "warmup": int(warmup),
            "min_runs": int(min_runs),
            "max_runs": int(max(max_runs, min_runs)),
            "rel_ci": float(rel_ci),
            "check_every": int(check_every),
        }
        try:
            proc = subprocess.run(
                [sys.executable, "-P", os.path.abspath(__file__)],
                input=json.dumps(job),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise LatencyError(f"The timing process took over {timeout} s.") from e
    if proc.returncode != 0:
        raise LatencyError(f"The timing process failed: {proc.stderr.strip()[-1500:]}")
    figures = json.loads(proc.stdout)
    overhead = figures.pop(IDENTITY, None)
    for row in figures.values():
        row.update(
            warmup_runs=int(warmup),
            threads=int(threads),
            xnnpack=bool(xnnpack),
            latency_ci_target=float(rel_ci),
        )
        if overhead is not None:
            row["overhead_us_median"] = overhead["latency_us_median"]
            row["overhead_us_p90"] = overhead["latency_us_p90"]
            row["latency_us_net_median"] = round(
                row["latency_us_median"] - overhead["latency_us_median"], 2
            )
    return figures


if __name__ == "__main__":
    _child_main()
