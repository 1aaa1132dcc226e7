"""Predictors: models that give a distribution over the next symbol.

Each built-in predictor lives in its own module and registers itself
(``@register("ngram")``) when that module is imported.  This package imports
them only when one is asked for, by name: ``make_predictor("ngram:order=5")``
imports ``predictors.ngram`` and no other, so a command that needs no model
(``lmc-ref --help``, ``lmc-ref info``) loads neither NumPy nor Numba.

``MODULES`` is the table of names; ``available()`` lists the names whose
module is installed.  A name whose module is missing is an unknown predictor
(``ValueError``), never an ``ImportError``.  The names of ``base`` (``Predictor``,
``register``, ``parse_spec``, ...) are reachable from here as before, loaded on
first use.
"""

import importlib
import importlib.util
import sys

#: predictor name -> the module that registers it
MODULES = {
    "ngram": "lmc_ref.predictors.ngram",
    "cm": "lmc_ref.predictors.context_mixing",
    "transformer": "lmc_ref.predictors.transformer",  # needs ckpt=PATH or model=HASH
    "llm": "lmc_ref.predictors.llm",                  # a pretrained Llama-family model
}

_BASE_NAMES = ("Predictor", "register", "int_param", "reject_unknown")


def _installed(name):
    try:
        return importlib.util.find_spec(MODULES[name]) is not None
    except (ImportError, ValueError):
        return False


def load(name):
    """Import the module of predictor ``name`` (registering it); ValueError if there is none."""
    if name not in MODULES or not _installed(name):
        names = ", ".join(available())
        raise ValueError(f"unknown predictor {name!r}; available: {names}")
    importlib.import_module(MODULES[name])


def available():
    """Names of the predictors this installation has (and any registered by other modules already)."""
    registered = sys.modules.get(f"{__name__}.base")  # imported only if something used it
    extra = registered.available() if registered is not None else []
    return sorted({name for name in MODULES if _installed(name)} | set(extra))


def predictor_class(name):
    """The class registered under ``name`` (its module imported now); ValueError if there is none."""
    from . import base

    if name in base.available():  # registered already (also a predictor registered by a user's module)
        return base.predictor_class(name)
    load(name)
    return base.predictor_class(name)


def parse_spec(spec):
    """Split ``"name:k1=v1,k2=v2"`` into ``("name", {...})`` (``base.parse_spec``)."""
    from . import base

    return base.parse_spec(spec)


def make_predictor(spec, stored=False, model_hash=b"", model_dirs=None):
    """Build a predictor from its spec string (``base.make_predictor``), importing its module first."""
    from . import base

    predictor_class(base.parse_spec(spec)[0])
    return base.make_predictor(spec, stored=stored, model_hash=model_hash, model_dirs=model_dirs)


def __getattr__(attr):
    """``from lmc_ref.predictors import Predictor`` and the other ``base`` names, loaded on first use;
    ``predictors.ngram`` and the other predictor modules as attributes, imported on first use."""
    if attr in _BASE_NAMES:
        from . import base

        return getattr(base, attr)
    module = f"{__name__}.{attr}"
    if importlib.util.find_spec(module) is not None:
        return importlib.import_module(module)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
