"""Encoder and decoder must compute bit-identical probabilities, so nothing on the
coding path may be compiled with fast-math (which lets the compiler reorder float
arithmetic).  Only the training kernels (``backprop_kernels``) may use it, and the
coding path must not import them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmc_ref

ROOT = Path(lmc_ref.__file__).parent
TRAINING_ONLY = {"backprop_kernels.py"}


def test_only_training_kernels_use_fastmath():
    users = sorted(p.name for p in ROOT.rglob("*.py") if "fastmath" in p.read_text())
    assert set(users) <= TRAINING_ONLY, users


def test_coding_modules_do_not_import_the_training_kernels():
    coding = [ROOT / "coder.py", ROOT / "quantize.py", ROOT / "container.py", ROOT / "codec.py", ROOT / "blocks.py", ROOT / "streaming.py",
              *sorted((ROOT / "predictors").glob("*.py"))]
    for path in coding:
        assert "backprop_kernels" not in path.read_text(), path.name


def test_fastmath_modules_call_no_kernel_of_the_coding_path():
    """Numba compiles a jitted callee, on its first call, with its *caller's*
    fast-math flag when the callee does not set one, and then reuses that
    compilation for every later caller with the same argument types.  So a
    training kernel that called a coding-path function (say the attention ``exp``)
    would decide, by running first, which bits the coder computes.  Modules that
    use fast-math therefore import nothing of lmc_ref."""
    for name in TRAINING_ONLY:
        tree = ast.parse(next(ROOT.rglob(name)).read_text())
        imported = [node.module or "." for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("lmc_ref"))]
        imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for a in node.names if a.name.startswith("lmc_ref")]
        assert not imported, (name, imported)


@pytest.mark.slow
@pytest.mark.parametrize("train_first", [False, True])
def test_transformer_fixture_decodes_whichever_kernels_compile_first(tmp_path, train_first):
    """The format-7 transformer fixture decodes in a process with an empty Numba
    cache, whether or not the training kernels were compiled there before the
    coding kernels (about a minute per case: everything compiles afresh)."""
    script = f"""
import numpy as np
from lmc_ref import codec
from lmc_ref.transformer import backprop, model
if {train_first}:
    cfg = {{"d_model": 16, "num_heads": 2, "num_layers": 1}}
    backprop.loss_and_grads(model.init_params(cfg, seed=0), cfg, np.zeros((1, 8), np.uint8))
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_models import FIXTURES, save
from test_old_files import fixture_text
folder = {str(tmp_path)!r}
save(folder + "/tiny.npz")
blob = (FIXTURES / "v7_transformer_tiny.lmc").read_bytes()
assert codec.decompress(blob, progress=False, model_dirs=[folder]) == fixture_text()[:5000]
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
