"""lmc_ref — a reference implementation of *Language Modeling Is Compression*.

Prediction and lossless compression are the same thing: a model that gives the
next symbol probability p lets an arithmetic coder spend about -log2 p bits on
it.  The package is organised around that loop::

    bytes -> Predictor -> pdf -> quantize -> cdf -> arithmetic coder -> payload

See ``docs/`` for the literate chapters and ``lmc_ref/coder.py`` for the coder.
"""

import os

# Numba's parallel kernels (OpenMP threads) and NumPy's BLAS (OpenBLAS threads)
# take turns during a training step.  By default both kinds of thread keep
# spinning after their work is done (OpenBLAS for 2**28 cycles, a good part of
# a second), stealing the cores the other is about to use: on 2 cores a
# training step ran 1.4x slower (OpenMP) and then 1.4x slower again (OpenBLAS).
# Both settings are read when the runtimes start, so they are made here, before
# NumPy or Numba load them (a program that imported NumPy first keeps OpenBLAS's
# default); a user's own settings win.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")  # spin 2**16 cycles, then sleep

__version__ = "0.1.0"
