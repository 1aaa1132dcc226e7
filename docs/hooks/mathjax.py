"""MathJax from an installed package, so the site renders math offline.

The pages load ``javascripts/mathjax/tex-mml-chtml.js``; this mkdocs hook
adds that file and what it loads at run time (its CHTML fonts, TeX
extensions, menu and accessibility components) to the build, copied from the
``mathjax`` folder of the pinned PyPI package django-static-mathjax (MathJax
3.2.2's ``es5`` build; a ``dev`` dependency).  Nothing is vendored into the
repository and no page fetches anything from another host.  Without the
package the build fails, naming it.
"""

from importlib import resources
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

#: Where the pages find MathJax, relative to the site root.
TARGET = "javascripts/mathjax"

#: What the ``tex-mml-chtml`` component needs from ``es5/``: itself, the
#: CHTML output's fonts, and the pieces it loads on demand.
PARTS = ("tex-mml-chtml.js", "output/chtml", "input/tex/extensions", "input/mml", "ui", "a11y", "sre")


def es5_folder():
    """The ``es5`` folder of the installed MathJax copy."""
    try:
        root = Path(str(resources.files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError:
        root = None
    if root is None or not (root / "tex-mml-chtml.js").is_file():
        raise PluginError(
            "MathJax not found: pip install 'django-static-mathjax==3.2.2.1' (or pip install -e '.[dev]')"
        )
    return root


def on_files(files, config):
    root = es5_folder()
    for part in PARTS:
        source = root / part
        paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in paths:
            uri = f"{TARGET}/{path.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
