"""Progress bars on stderr, made in one place so that every command follows one policy.

A caller says how much work there is (``total``, in ``unit``s) and passes the
user's ``progress`` policy through unchanged:

* ``True``: always draw a bar;
* ``False`` (or ``None``): never;
* ``"auto"``: only when stderr is a terminal (a bar in a log file or a pipe is
  noise) and the work is large (``total`` above ``threshold``; the default is
  the codec's 4 MiB, below which coding takes about a second).

``progress_bar`` returns a ``tqdm`` bar, or ``None`` when there is to be none;
``tick`` turns that into the ``progress(n)`` callback the coding loops take
(``None`` again when there is no bar, so the loops skip it), and ``close``
closes a bar that may be ``None``.  ``tqdm`` is imported only when a bar is
drawn.
"""

import sys

#: Work larger than this (in the bar's units; bytes for the codec) gets a bar under ``"auto"``.
PROGRESS_THRESHOLD = 4 << 20


def wanted(progress, total=None, threshold=PROGRESS_THRESHOLD):
    """Whether the policy ``progress`` (True, False/None or "auto") asks for a bar for ``total`` units.

    Under ``"auto"``, work of unknown size (``total=None``) counts as large.
    """
    if progress == "auto":
        return sys.stderr.isatty() and (total is None or total > threshold)
    if progress not in (True, False, None):
        raise ValueError(f"progress must be True, False or 'auto', not {progress!r}")
    return bool(progress)


def progress_bar(total, progress, desc=None, unit="B", threshold=PROGRESS_THRESHOLD, leave=False, **options):
    """A tqdm bar on stderr for ``total`` units of work, or None, following the policy ``progress``.

    Args:
        total: units of work (None if unknown: the bar then only counts).
        progress: True, False/None or "auto" (see the module docstring).
        desc: the bar's label.
        unit: "B" (shown with k/M prefixes), or a word such as "chunk" or "step".
        threshold: the size above which "auto" draws a bar.
        leave: keep the finished bar on screen (default: erase it).
        options: passed on to ``tqdm`` (``initial``, ...).
    """
    if not wanted(progress, total, threshold):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=leave, file=sys.stderr,
                **options)


def tick(bar):
    """The ``progress(n)`` callback advancing ``bar`` by ``n`` units, or None when there is no bar."""
    return None if bar is None else bar.update


def close(bar):
    """Close ``bar`` unless it is None."""
    if bar is not None:
        bar.close()
