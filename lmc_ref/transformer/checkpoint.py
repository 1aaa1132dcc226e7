"""Checkpoints of the byte transformer: ``.npz`` files without pickle, and the weights' hash.

A checkpoint holds the weights, the Adam moments, the step count and a JSON
``meta`` (config, hyper-parameters, SHA-256 of the training data, history)
stored as a uint8 array, so ``np.load(..., allow_pickle=False)`` reads it.
The *model hash* is what a ``.lmc`` header records to name the weights: the
decoder finds them by it (``lmc_ref.models``), never by a path.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .model import param_shapes


def model_hash(params):
    """SHA-256 (32 bytes) over every weight: name, shape and float32 little-endian bytes, names sorted."""
    h = hashlib.sha256()
    for name in sorted(params):
        w = np.ascontiguousarray(params[name], dtype="<f4")
        h.update(name.encode() + b"\0" + json.dumps(list(w.shape)).encode() + b"\0")
        h.update(w.tobytes())
    return h.digest()


def save_checkpoint(path, state):
    """Write ``state`` (see ``train``) to ``path`` as an ``.npz`` (atomically: temp file + rename)."""
    arrays = {"step": np.array(state["step"], dtype=np.int64),
              "meta": np.frombuffer(json.dumps(state["meta"]).encode(), dtype=np.uint8)}
    for prefix in ("param", "adam_m", "adam_v"):
        for name, w in state[prefix].items():
            arrays[f"{prefix}/{name}"] = w
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint`` (no pickle); checks names and shapes."""
    with np.load(path, allow_pickle=False) as z:
        if "meta" not in z.files or "step" not in z.files:
            raise ValueError(f"{path}: not an lmc_ref transformer checkpoint (no meta/step)")
        meta = json.loads(z["meta"].tobytes().decode())
        shapes = param_shapes(meta["config"])
        state = {"step": int(z["step"]), "meta": meta}
        for prefix in ("param", "adam_m", "adam_v"):
            state[prefix] = {}
            for name, shape in shapes.items():
                key = f"{prefix}/{name}"
                if key not in z.files or z[key].shape != shape or z[key].dtype != np.float32:
                    raise ValueError(f"{path}: {key} missing or not float32 of shape {shape}")
                state[prefix][name] = z[key]
    return state
