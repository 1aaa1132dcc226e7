"""Predictors: models that give a distribution over the next symbol.

Importing this package registers every built-in predictor, so
``make_predictor("ngram:order=5")`` works after ``import lmc_ref.predictors``.
"""

from .base import Predictor, available, make_predictor, parse_spec, predictor_class, register  # noqa: F401
from . import ngram  # noqa: F401  (registers "ngram")
from . import context_mixing  # noqa: F401  (registers "cm")
from . import transformer  # noqa: F401  (registers "transformer"; needs ckpt=PATH)
