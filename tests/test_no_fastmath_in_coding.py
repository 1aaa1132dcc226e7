"""Encoder and decoder must compute bit-identical probabilities, so nothing on the
coding path may be compiled with fast-math (which lets the compiler reorder float
arithmetic).  Only the training kernels (``backprop_kernels``) may use it, and the
coding path must not import them."""

from pathlib import Path

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
