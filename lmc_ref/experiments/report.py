"""How an experiment writes its results: ``NAME.json``, ``NAME.md`` and ``NAME.png`` in one folder.

Every experiment ends the same way: the results as JSON (``{"meta": ..., "rows":
...}``, for scripts and for the docs' tables), the same results as a Markdown
table (included verbatim in the docs, from ``docs/results/``), and a figure.
``write_report`` does that epilogue once for all of them and returns the paths;
``pyplot`` is the one place that selects matplotlib's non-interactive ``Agg``
backend (the experiments run in terminals and on machines without a display),
and ``save_figure`` saves and closes a figure the way every experiment does.
"""

import json
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the ``Agg`` backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(n):
    """``n`` distinct colours: matplotlib's 10-colour cycle, or its 20-colour ``tab20`` beyond ten series."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def save_figure(fig, path, dpi=120):
    """Lay out ``fig``, save it to ``path`` (PNG) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def write_report(outdir, name, result, markdown, figure=None, also=(), log=print):
    """Write ``NAME.json`` (``result``), ``NAME.md`` (``markdown``) and ``NAME.png`` into ``outdir``.

    Args:
        outdir: the folder, created if missing.
        name: the experiment's name, the stem of every file.
        result: a JSON-serialisable dict, written with ``indent=1``; its
            ``meta["seconds"]``, if any, goes into the log line.
        markdown: the text of ``NAME.md``.
        figure: ``figure(path)`` draws the PNG; None writes no figure.
        also: names of other outputs the experiment wrote itself (for the log line).
        log: called with one line saying what was written.

    Returns:
        ``{"json": Path, "md": Path}``, plus ``"png"`` when a figure was drawn.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": outdir / f"{name}.json", "md": outdir / f"{name}.md"}
    paths["json"].write_text(json.dumps(result, indent=1))
    paths["md"].write_text(markdown)
    if figure is not None:
        paths["png"] = outdir / f"{name}.png"
        figure(paths["png"])
    names = [p.name for p in paths.values()] + list(also)
    seconds = result.get("meta", {}).get("seconds")
    log(f"wrote {', '.join(names[:-1])} and {names[-1]} to {outdir}" + ("" if seconds is None else f" in {seconds} s"))
    return paths
