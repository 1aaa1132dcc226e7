"""Numbers quoted in the prose are read from the results files, never typed.

A page writes ``{{ table1.meta.seconds | .0f }}`` or
``{{ table1.row(compressor="gzip", chunked=True, modality="text").rate }}``
and this mkdocs hook replaces it, before the Markdown is rendered, with the
value from ``docs/results/table1.json`` (the file that ``lmc-ref reproduce
--out docs/results`` writes).  Rerunning a command and rebuilding the site
therefore updates every figure quoted from its results.

The expression between the braces is a small, safe subset of Python:

* ``NAME`` is ``docs/results/NAME.json`` (or ``docs/NAME.json``); ``.meta``, ``.rows`` and any
  ``.key`` then index into the JSON (``["key"]`` and ``[0]`` work too);
* ``NAME.row(key=value, ...)`` is the one row whose fields equal the given
  literals (a value ``None`` matches a row without that key, ``...`` a row
  with it, whatever its value); no match or
  several matches fail the build, naming the candidates;
* numbers combine with ``+ - * /`` and unary minus, so a page can quote a
  difference (``{{ a.row(...).rate - b.row(...).rate | .1f }}``);
* ``| SPEC`` formats the value with Python's ``format(value, SPEC)``; without
  it a float is written with two decimals (``.2f``) and an int with
  thousands separators (``,``).

Anything else (an unknown file or key, a function other than ``row``) fails
the build, so a stale or mistyped reference cannot reach the site.  Inside code
(fenced blocks, backtick spans) nothing is replaced; elsewhere every ``{{``
followed by a letter, digit, ``(`` or ``-`` starts a reference (so
``{{...}}`` stays as it is).
"""

import ast
import json
import operator
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

REFERENCE = re.compile(
    r"\{\{\s*(?P<expr>[-(0-9A-Za-z_][^{}|]*?)\s*(?:\|\s*(?P<spec>[^{}|]*?)\s*)?\}\}",
    re.S,
)

# Fenced blocks (``` or ~~~, closed by a fence at least as long) and inline code spans.
CODE = re.compile(r"^[ \t]*(?P<f>`{3,}|~{3,}).*?^[ \t]*(?P=f)[`~]*[ \t]*$|(?P<t>`+)(?!`).+?(?<!`)(?P=t)(?!`)", re.M | re.S)

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class ResultsError(ValueError):
    """A reference that does not resolve to one value."""


class Results:
    """The JSON results files of one folder, loaded on first use."""

    def __init__(self, *folders):
        self.folders = [Path(f) for f in folders]
        self._loaded = {}

    def load(self, name):
        if name not in self._loaded:
            paths = [folder / f"{name}.json" for folder in self.folders]
            found = [path for path in paths if path.is_file()]
            if not found:
                raise ResultsError(f"no results file {' or '.join(map(str, paths))}")
            self._loaded[name] = json.loads(found[0].read_text(encoding="utf-8"))
        return self._loaded[name]


def _row(data, name, filters):
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ResultsError(f"{name} has no list of rows")

    def matches(row):
        def ok(key, want):
            if want is None:
                return row.get(key) is None
            if want is Ellipsis:
                return row.get(key) is not None
            return key in row and row[key] == want

        return all(ok(k, v) for k, v in filters.items())

    found = [row for row in rows if matches(row)]
    if len(found) != 1:
        wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items())
        raise ResultsError(f"{name}.row({wanted}) matches {len(found)} rows, not 1")
    return found[0]


def evaluate(expr, results):
    """The value of one reference expression (see the module docstring)."""
    try:
        tree = ast.parse(" ".join(expr.split()), mode="eval").body
    except SyntaxError as err:
        raise ResultsError(f"not an expression: {expr!r} ({err.msg})") from None

    def value(node):
        if isinstance(node, ast.Constant) and (node.value is Ellipsis or isinstance(node.value, (int, float, str, bool, type(None)))):
            return node.value
        if isinstance(node, ast.Name):
            return results.load(node.id)
        if isinstance(node, ast.Attribute):
            return index(value(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return index(value(node.value), value(node.slice))
        if isinstance(node, ast.Call):
            func = node.func
            if not (isinstance(func, ast.Attribute) and func.attr == "row" and isinstance(func.value, ast.Name)):
                raise ResultsError(f"only NAME.row(...) may be called, in {expr!r}")
            if node.args or any(kw.arg is None for kw in node.keywords):
                raise ResultsError(f"NAME.row takes key=value arguments only, in {expr!r}")
            return _row(results.load(func.value.id), func.value.id, {kw.arg: value(kw.value) for kw in node.keywords})
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](number(node.left), number(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -number(node.operand)
        raise ResultsError(f"unsupported {type(node).__name__} in {expr!r}")

    def number(node):
        v = value(node)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ResultsError(f"{ast.unparse(node)} is {v!r}, not a number, in {expr!r}")
        return v

    def index(container, key):
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            keys = list(container)[:12] if isinstance(container, dict) else None
            raise ResultsError(f"no {key!r} in {expr!r}" + (f" (keys: {keys})" if keys else "")) from None

    return value(tree)


def render(value, spec=None):
    """``value`` as the page shows it."""
    if spec:
        return format(value, spec)
    if isinstance(value, (bool, dict, list)) or value is None:
        raise ResultsError(f"{str(value)[:60]} is not a figure")
    if isinstance(value, int):
        return format(value, ",")
    if isinstance(value, float):
        return format(value, ".2f")
    return str(value)


def substitute(markdown, results, where="page"):
    """``markdown`` with every reference outside code replaced by its value.

    Fenced code blocks and inline code spans are copied unchanged, so a page
    can show the syntax itself in backticks.
    """
    out = []

    def prose(start, end):
        for match in REFERENCE.finditer(markdown, start, end):
            out.append(markdown[prose.pos : match.start()])
            try:
                out.append(render(evaluate(match.group("expr"), results), match.group("spec")))
            except (ResultsError, ValueError) as err:
                line = markdown.count("\n", 0, match.start()) + 1
                raise PluginError(f"{where}:{line}: {match.group(0)!r}: {err}") from None
            prose.pos = match.end()
        out.append(markdown[prose.pos : end])
        prose.pos = end

    prose.pos = 0
    for code in CODE.finditer(markdown):
        prose(prose.pos, code.start())
        out.append(code.group(0))
        prose.pos = code.end()
    prose(prose.pos, len(markdown))
    return "".join(out)


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"])
    results = Results(docs / "results", docs)   # generate.json sits in docs/ itself
    return substitute(markdown, results, page.file.src_uri)
