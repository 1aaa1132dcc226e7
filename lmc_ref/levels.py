"""Compression levels ``-1`` .. ``-9``: which model spec each digit means, in one table.

gzip, xz and zstd users pick speed against size with a digit; ``lmc-ref``
maps each digit to a predictor spec here and nowhere else (``lmc-ref
compress --help`` prints the table).  ``-6`` is the default model, as in
gzip.  The table is what ``python bench/levels.py`` printed for
``data/enwik8_head`` (the first 1,071,051 bytes of enwik8), whole processes
(start-up and loading the compiled kernels included, so MB/s is low for every
row), on a shared 2-core machine::

    level  spec                    rate     MB/s (comp / dec)   peak RSS
    1      ngram:order=1,mem=16    48.44 %  0.68 / 0.47         156 MB
    2      ngram:order=2,mem=16    38.00 %  0.58 / 0.58         187 MB
    3      ngram:order=3,mem=18    30.83 %  0.65 / 0.64         222 MB
    4      ngram:order=4,mem=20    26.95 %  0.45 / 0.42         456 MB
    5      ngram:order=5,mem=20    26.05 %  0.42 / 0.42         524 MB
    6      ngram (order=6,mem=20)  25.50 %  0.40 / 0.38         590 MB
    7      cm:mem=18               22.02 %  0.14 / 0.18         236 MB
    8      cm:mem=20               21.11 %  0.16 / 0.11         258 MB
    9      cm:mem=22               20.93 %  0.10 / 0.13         370 MB

(one run each way with other work on the machine, load average about 6: the
speeds are relative, a quiet machine runs every row about twice as fast.)
(``ngram:order=6,mem=22`` gained 0.02 points for 3x the memory, so no level
uses it.)  The module imports nothing, so ``lmc-ref --help`` stays fast.
"""

#: The spec ``lmc-ref`` and ``codec.compress`` use when none is given (level 6).
DEFAULT_SPEC = "ngram"
DEFAULT_LEVEL = 6

#: level -> (spec, a few words for --help)
LEVELS = {
    1: ("ngram:order=1,mem=16", "fastest, order-1 counts"),
    2: ("ngram:order=2,mem=16", "order-2 counts"),
    3: ("ngram:order=3,mem=18", "order-3 counts"),
    4: ("ngram:order=4,mem=20", "order-4 counts"),
    5: ("ngram:order=5,mem=20", "order-5 counts"),
    6: (DEFAULT_SPEC, "the default: order-6 counts"),
    7: ("cm:mem=18", "context mixing, 2**18-entry tables (about 2x slower than ngram)"),
    8: ("cm:mem=20", "context mixing, 2**20-entry tables"),
    9: ("cm:mem=22", "best: context mixing, 2**22-entry tables"),
}


def spec_for_level(level):
    """The model spec of compression level ``level`` (1..9); ValueError otherwise."""
    if level not in LEVELS:
        raise ValueError(f"compression level {level} outside 1..9")
    return LEVELS[level][0]


def levels_help():
    """The lines ``lmc-ref compress --help`` prints for ``-1`` .. ``-9``."""
    return "\n".join(f"  -{level}  {spec:<22}{words}" for level, (spec, words) in LEVELS.items())
