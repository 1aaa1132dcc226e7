"""The paper's experiments, one module each: ``table1`` (its Table 1), ``scaling``,
``context`` (context length), ``tokenization`` and ``generate`` (compressors as
generative models), plus ``mixer`` (the context-mixing chapter's figure)."""
