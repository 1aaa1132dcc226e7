"""lmc_ref — a reference implementation of *Language Modeling Is Compression*.

Prediction and lossless compression are the same thing: a model that gives the
next symbol probability p lets an arithmetic coder spend about -log2 p bits on
it.  The package is organised around that loop::

    bytes -> Predictor -> pdf -> quantize -> cdf -> arithmetic coder -> payload

See ``docs/`` for the literate chapters and ``lmc_ref/coder.py`` for the coder.
"""

__version__ = "0.1.0"
