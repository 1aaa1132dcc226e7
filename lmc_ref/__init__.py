"""lmc_ref — a reference implementation of *Language Modeling Is Compression*.

Prediction and lossless compression are the same thing: a model that gives the
next symbol probability p lets an arithmetic coder spend about -log2 p bits on
it.  The package is organised around that loop::

    bytes -> Predictor -> pdf -> quantize -> cdf -> arithmetic coder -> payload

See ``docs/`` for the literate chapters and ``lmc_ref/coder.py`` for the coder.
"""

import os

# Numba's parallel kernels (OpenMP threads) and NumPy's BLAS (its own threads)
# take turns during a training step.  By default OpenMP threads spin for a while
# after each parallel region, stealing the cores BLAS is about to use (training
# ran 1.4x slower that way on 2 cores).  Passive waiting must be chosen before
# the OpenMP runtime starts, i.e. here; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
