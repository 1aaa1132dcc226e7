"""The paper's experiments, one module each, and the table the command line runs them from.

``table1`` (its Table 1, the ``lmc-ref reproduce`` command), ``scaling``,
``context`` (context length), ``in_context`` (rate against the position in a
chunk), ``tokenization`` and ``generate`` (compressors as generative models)
each expose one function with one signature::

    experiment(outdir="results", *, text=None, quick=False, workers=None, seed=0,
               progress=False, log=print, **module_options) -> result

which runs the experiment on the enwik8 file ``text`` (default: found by
``lmc_ref.data.find_enwik``), writes ``outdir/NAME.json``, ``NAME.md`` and its
figures (``report.write_report``) and returns what it wrote to ``NAME.json``.
``quick`` picks the small settings, ``workers`` the processes (None: all cores),
``seed`` the experiment's seed, ``progress`` the bar policy of
``lmc_ref.progress`` (True, False, "auto") and ``log`` receives one line per
stage.  An experiment with no use for one of these accepts and ignores it, so
that every experiment is called alike; ``module_options`` are the few that only
one module has (``table1``: ``images``, ``audio``, ``verify``, ``download``,
``transformers``, ``backend``; ``generate``: ``images``, ``audio``, ``transformers``, ``llm``; ``in_context``:
``images``, ``audio``, ``transformers``, ``gguf``, ...).

``EXPERIMENTS`` maps each name to its module and a description for ``--help``;
``run(name, ...)`` imports the module only then (training and plotting pull in
much that ``lmc-ref compress`` never needs).  ``mixer`` and ``costs`` (figures of
the context-mixing chapter) are run as ``python -m lmc_ref.experiments.NAME``.
"""

import importlib
from typing import NamedTuple


class Experiment(NamedTuple):
    """One row of ``EXPERIMENTS``: the module under ``lmc_ref.experiments`` and what it measures."""

    module: str
    description: str


EXPERIMENTS = {
    "table1": Experiment(
        "table1", "compression rates of classical compressors and lmc_ref's predictors on 2048-byte chunks "
                  "of text, image patches, audio and random bytes, every chunk decoded and compared."),
    "scaling": Experiment(
        "scaling", "transformers of 20K..3.2M parameters trained on 3 amounts of text, raw and adjusted rate "
                   "against size (--quick: about 10 minutes on 2 cores; full: enwik8, 3000 steps per model, "
                   "many hours on a laptop CPU)."),
    "context": Experiment(
        "context", "compression rate against chunk length (64 B ... 64 KiB) for gzip, LZMA2, brotli and "
                   "lmc_ref's predictors, every chunk decoded and compared."),
    "in_context": Experiment(
        "in_context", "rate against the position within the 2048-byte chunk (text, image, audio) for cm, "
                      "the pretrained SmolLM2-135M and trained transformers (--quick: 4 chunks per modality, "
                      "a few minutes on 2 cores; full: 16)."),
    "tokenization": Experiment(
        "tokenization", "the same transformer trained on bytes and on BPE tokens (1K, 2K, 5K), rate against "
                        "the original bytes, every chunk decoded and compared (--quick: about 10 minutes on "
                        "2 cores; full: 5000 steps at 2048 tokens per model, about a day)."),
    "generate": Experiment(
        "generate", "compressors as generative models - text, image and audio continuations sampled from "
                    "gzip, LZMA2, brotli and lmc_ref's predictors, and text from the pretrained "
                    "SmolLM2-135M (about 8 minutes on 2 cores)."),
}


def experiment_function(name):
    """The ``experiment`` function of experiment ``name`` (its module imported now)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name].module}").experiment


def run(name, outdir="results", **options):
    """Run experiment ``name``: ``experiment(outdir, **options)`` of its module; returns its result."""
    return experiment_function(name)(outdir, **options)
