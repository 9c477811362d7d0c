"""Run caching and atomic result files.

Every training run lives in ``<workdir>/runs/<name>-<hash>/`` where the hash is
taken over the run's full configuration. A run whose ``result.json`` exists is
finished and is never trained again; an interrupted run resumes from the
checkpoint its ``progress.json`` names (see ``kd_keras.training.fit``). Files
are written to a temporary name and renamed, so a crash never leaves a
half-written result behind.
"""

import hashlib
import json
import os
import tempfile


def _read_umask():
    mask = os.umask(0o022)  # The only way to read it is to set it; read once, at import.
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def config_hash(config, length=10):
    """A stable short hash of a JSON-serializable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def run_dir(workdir, name, config):
    return os.path.join(workdir, "runs", f"{name}-{config_hash(config)}")


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path, text):
    """Writes `text` (str or bytes) to `path` atomically: temporary file, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        # mkstemp creates the file private (0600); give it the permissions a
        # plain open() would have (0666 less the umask), so reports stay readable.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_result(directory):
    """The finished run's result dict, or None if it has not finished."""
    path = os.path.join(directory, "result.json")
    return read_json(path) if os.path.exists(path) else None


MODEL_FILES = ("model.keras", "model.h5")


def saved_model_path(directory):
    """The model file a finished run saved, or None."""
    for name in MODEL_FILES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def save_model(model, directory):
    """Saves a run's model atomically; returns its path.

    Quantization-aware (TF-MOT) models go to ``model.h5``: the ``.keras``
    format does not restore their quantizer variables. Others go to
    ``model.keras``.
    """
    os.makedirs(directory, exist_ok=True)
    quantized = any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
    stem, ext = ("model", ".h5") if quantized else ("model", ".keras")
    tmp = os.path.join(directory, f"{stem}.partial{ext}")
    path = os.path.join(directory, stem + ext)
    model.save(tmp, **({"include_optimizer": False} if quantized else {}))
    os.replace(tmp, path)
    return path
