"""The built site, read as a reader's browser would: listings, headings, math, hosts, figures.

One ``mkdocs build --strict`` per test session (a few seconds) into a
temporary folder; every check reads that HTML.  ``tests/test_docs.py`` checks
the Markdown sources without building.

* Every source region a page includes (``--8<-- "lmc_ref/...py:section"``)
  appears whole inside one ``<pre>`` block of that page: a listing that lost
  its fence would render as prose, and fail here.
* Every page has exactly one ``<h1>``.
* No ``--8<--`` scissors survive into a page's text (inline code, where the
  docs explain the syntax, excepted).
* Nothing is loaded from another host: every ``src``, every stylesheet/icon
  ``href``, every CSS ``url()`` is a path inside the site, and the file exists.
* Math reaches MathJax whole: every math span is delimited ``\\( ... \\)``,
  no delimiter is left in the prose (as when a line starting ``>`` turned
  into a blockquote), no control character (a ``\\t`` from ``"\\times"``)
  sits in a formula, and the MathJax copy with its fonts is in the site.
* Figures quoted from the results (``{{ table1.row(...).rate }}``, see
  ``docs/hooks/results.py``) resolve; the hook itself is tested on files made
  here, including the ways a reference must fail.
* Fragments (``results/*.md``, ``generate.md``) are not pages and not in the
  search index; the chapters are.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from test_docs import _SECTION_TARGET, _marker, snippet_references

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# ------------------------------------------------------------ the build ----


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return out


class Page(HTMLParser):
    """What the checks need from one HTML file."""

    RESOURCE_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
                      "audio": ("src",), "video": ("src", "poster"), "embed": ("src",), "object": ("data",),
                      "track": ("src",)}
    VOID = {"img", "link", "meta", "br", "hr", "input", "source", "track", "embed", "wbr", "area", "base", "col"}

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.h1 = 0
        self.resources = []      # (tag, attribute, value)
        self.pres = []           # text of each <pre>
        self.prose = []          # text outside <pre>, <code>, math, <script>, <style>
        self.math = []           # text of each arithmatex element
        self._stack = []         # open tags, with a flag for "math"
        self._pre = None
        self._math = None
        self.feed(html)
        self.close()

    def _inside(self, *tags):
        return any(t in tags for t, _ in self._stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h1":
            self.h1 += 1
        for name in self.RESOURCE_ATTRS.get(tag, ()):
            if attrs.get(name):
                self.resources.append((tag, name, attrs[name]))
        if tag == "link" and attrs.get("href"):
            self.resources.append((tag, "href", attrs["href"]))
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", attrs.get("style") or ""):
            self.resources.append((tag, "style", url))
        if tag in self.VOID:
            return
        is_math = "arithmatex" in (attrs.get("class") or "").split()
        if is_math and self._math is None:
            self._math = []
        if tag == "pre" and self._pre is None:
            self._pre = []
        self._stack.append((tag, is_math))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID or not any(t == tag for t, _ in self._stack):
            return
        while self._stack:
            t, is_math = self._stack.pop()
            if t == "pre" and self._pre is not None and not self._inside("pre"):
                self.pres.append("".join(self._pre))
                self._pre = None
            if is_math and self._math is not None and not any(m for _, m in self._stack):
                self.math.append("".join(self._math))
                self._math = None
            if t == tag:
                break

    def handle_data(self, data):
        if self._pre is not None:
            self._pre.append(data)
        elif self._math is not None:
            self._math.append(data)
        elif not self._inside("code", "script", "style", "textarea"):
            self.prose.append(data)


@pytest.fixture(scope="session")
def pages(site):
    return {p.relative_to(site).as_posix(): Page(p.read_text(encoding="utf-8")) for p in sorted(site.rglob("*.html"))}


def html_of(md_path):
    """The built file of a page: ``docs/x.md`` -> ``x/index.html`` (directory URLs)."""
    stem = md_path.relative_to(DOCS).with_suffix("").as_posix()
    return "index.html" if stem == "index" else f"{stem}/index.html"


def _squash(text):
    return " ".join(text.split())


def source_region(path, section):
    """The lines a snippet section includes (marker lines of any section dropped), squashed."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    if section is None:
        body = lines
    else:
        start = next(i for i, s in enumerate(lines) if _marker("start", section).search(s))
        end = next(i for i, s in enumerate(lines) if _marker("end", section).search(s))
        body = lines[start + 1 : end]
    any_marker = re.compile(r"-+8<-+\s+\[\s*(start|end)\s*:")
    return _squash("\n".join(s for s in body if not any_marker.search(s)))


# --------------------------------------------------------------- checks ----


def test_every_listing_is_inside_a_code_block(pages):
    checked, bad = 0, []
    for md in sorted(DOCS.glob("**/*.md")):
        html = html_of(md)
        for lineno, target in snippet_references(md.read_text(encoding="utf-8")):
            if target is None or target.endswith(".md"):
                continue   # Markdown fragments (results tables) are meant to render as Markdown
            m = _SECTION_TARGET.match(target)
            path, section = (m.group("path"), m.group("section")) if m else (target, None)
            region = source_region(path, section)
            if not region:
                continue
            checked += 1
            assert html in pages, f"{md.relative_to(DOCS)} was not built to {html}"
            if not any(region in _squash(pre) for pre in pages[html].pres):
                bad.append(f"{md.relative_to(DOCS)}:{lineno}: {target} is not inside one <pre> block of {html}")
    assert checked >= 30, f"only {checked} listings found: did the docs or this test's parser change?"
    assert not bad, "\n".join(bad)


def test_a_listing_without_its_fence_is_caught():
    """The parser behind the listing check sees prose as prose."""
    fenced = Page('<pre><code><span>def f</span>(x):\n    return x</code></pre>')
    bare = Page("<p>def f(x): return x</p>")
    assert "def f(x): return x" in _squash(fenced.pres[0])
    assert bare.pres == [] and "def f(x)" in "".join(bare.prose)


def test_every_page_has_one_h1(pages):
    bad = {name: page.h1 for name, page in pages.items() if page.h1 != 1}
    assert len(pages) >= 14
    assert not bad, f"pages whose <h1> count is not 1: {bad}"


def test_no_snippet_marker_reaches_the_page(pages):
    bad = [name for name, page in pages.items()
           if any("8<" in t and re.search(r"-+8<-+", t) for t in page.prose + page.pres)]
    assert not bad, f"'--8<--' left in the text (or a listing) of: {bad}"


def _is_local(url):
    return not re.match(r"^([a-z][a-z0-9+.-]*:|//)", url, re.I) or url.startswith("data:")


def test_nothing_is_loaded_from_another_host(site, pages):
    bad, missing, count = [], [], 0
    for name, page in pages.items():
        for tag, attr, value in page.resources:
            urls = [u.split()[0] for u in value.split(",")] if attr == "srcset" else [value]
            for url in urls:
                count += 1
                if not _is_local(url):
                    bad.append(f"{name}: <{tag} {attr}={url!r}>")
                elif not url.startswith("data:"):
                    path = url.split("#")[0].split("?")[0]
                    # 404.html uses root-relative paths (it is served from any folder).
                    target = site / path.lstrip("/") if path.startswith("/") else (site / name).parent / path
                    target = target.resolve()
                    if not (target.is_file() or (target / "index.html").is_file()):
                        missing.append(f"{name}: <{tag} {attr}={url!r}>")
    for css in site.rglob("*.css"):
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text(encoding="utf-8", errors="replace")):
            count += 1
            if not _is_local(url):
                bad.append(f"{css.relative_to(site)}: url({url})")
    assert count > 100
    assert not bad, "loaded from another host:\n" + "\n".join(bad)
    assert not missing, "local resources that are not in the site:\n" + "\n".join(missing)


def test_mathjax_and_its_fonts_are_served_with_the_site(site, pages):
    scripts = [v for tag, attr, v in pages["02-arithmetic-coding/index.html"].resources if tag == "script"]
    assert any(s.endswith("javascripts/mathjax/tex-mml-chtml.js") for s in scripts), scripts
    assert (site / "javascripts/mathjax/tex-mml-chtml.js").stat().st_size > 500_000
    assert len(list((site / "javascripts/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))) >= 20


def math_problems(name, page):
    """What keeps the formulas of one page from reaching MathJax whole."""
    bad = []
    for formula in page.math:
        f = formula.strip()
        if not ((f.startswith("\\(") and f.endswith("\\)")) or (f.startswith("\\[") and f.endswith("\\]"))):
            bad.append(f"{name}: math not delimited: {f[:80]!r}")
        if re.search(r"[\x00-\x09\x0b-\x1f]", formula):
            bad.append(f"{name}: control character in {f[:80]!r} (an unescaped backslash in a Python string?)")
    prose = "".join(page.prose)
    # A formula that missed arithmatex (say, a continuation line starting with
    # ">" became a blockquote, and Markdown ate the backslash of its "\(")
    # leaves delimiters or TeX commands in the text.
    for m in re.finditer(r"\\[()\[\]]|\\[A-Za-z]{2,}", prose):
        bad.append(f"{name}: TeX left in the text: ...{prose[max(0, m.start() - 40) : m.end() + 40]!r}")
    return bad


def markdown_control_characters(text):
    """``(line, repr)`` of control characters, tabs included, outside fenced blocks of a Markdown text.

    Markdown turns a tab into spaces, so a ``"\\times"`` written without
    the backslash doubled (a tab, then ``imes``) can only be seen in the source.
    """
    found, fence = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^[ \t]*(`{3,}|~{3,})", line)
        if m and (fence is None or m.group(1).startswith(fence)):
            fence = m.group(1) if fence is None else None
            continue
        if fence is None:
            found += [(lineno, repr(c)) for c in re.findall(r"[\x00-\x09\x0b-\x1f\x7f]", line)]
    return found


def test_no_control_characters_in_the_markdown():
    bad = [f"{md.relative_to(DOCS)}:{line}: {char}" for md in sorted(DOCS.glob("**/*.md"))
           for line, char in markdown_control_characters(md.read_text(encoding="utf-8"))]
    assert markdown_control_characters("a \\(T \times T\\)\n```\n\tcode\n```\n") == [(1, "'\\t'")]
    assert not bad, "\n".join(bad)


def test_math_reaches_mathjax_whole(pages):
    bad = [problem for name, page in pages.items() for problem in math_problems(name, page)]
    count = sum(len(page.math) for page in pages.values())
    assert count > 150, f"only {count} formulas: is arithmatex still on?"
    assert not bad, "\n".join(bad)


def test_broken_math_is_caught():
    good = Page('<p>width <span class="arithmatex">\\(r f / T\\)</span></p>')
    eaten = Page("<p>width (\\lfloor r \\rfloor</p><blockquote><p>r f / T - 1 \\ge 63)</p></blockquote>")
    tab = Page('<p><span class="arithmatex">\\(T \times T\\)</span></p>')  # "\t" is the tab: the bug itself
    assert math_problems("good", good) == []
    assert len(math_problems("eaten", eaten)) == 3
    assert "control character" in math_problems("tab", tab)[0]


def test_fragments_are_not_pages_and_chapters_are_searchable(site):
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"].split("#")[0] for doc in index["docs"]}
    assert not [loc for loc in locations if loc.startswith(("results/", "generate/"))], sorted(locations)
    assert not (site / "results" / "table1" / "index.html").exists()
    assert not (site / "generate" / "index.html").exists()
    assert {"04-evaluation/", "glossary/", "api/"} <= locations


def test_runnable_examples_show_their_output(site):
    """Each runnable example that prints (``docs/hooks/examples.py``) is followed by its "Output" block."""
    hook = _hook("examples")
    checked = 0
    for md in sorted(DOCS.glob("*.md")):
        blocks = hook.runnable_blocks(md.read_text(encoding="utf-8"))
        printing = [b for b in blocks if b[0] == "bash" or "print(" in b[2]]
        if printing:
            html = (site / html_of(md)).read_text(encoding="utf-8")
            shown = len(re.findall(r'<span class="filename">Output</span>', html))
            assert shown >= len(printing), f"{md.name}: {len(printing)} examples print, {shown} outputs shown"
            checked += 1
    assert checked >= 3, "fewer pages with runnable examples than expected: did the marker change?"


def test_no_results_reference_is_left_unresolved(pages):
    bad = [name for name, page in pages.items() if re.search(r"\{\{\s*[-(0-9A-Za-z_]", "".join(page.prose))]
    assert not bad, bad


# ------------------------------------------------ the results hook itself ----


def _hook(name):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def results(tmp_path):
    (tmp_path / "exp.json").write_text(json.dumps({
        "meta": {"seconds": 325.0, "data": {"text": "enwik8"}},
        "rows": [
            {"compressor": "gzip", "modality": "text", "rate": 47.76, "chunks": 522},
            {"compressor": "gzip", "modality": "text", "rate": 46.016, "chunks": 82, "subset": "held out"},
            {"compressor": "cm", "modality": "text", "rate": 37.978, "chunks": 82, "subset": "held out"},
            {"compressor": "gzip", "modality": "image", "rate": 75.868, "chunks": 1000},
        ],
    }))
    return _hook("results").Results(tmp_path)


def test_results_references_give_the_recorded_figures(results):
    hook = _hook("results")
    text = (
        "took {{ exp.meta.seconds | .0f }} s; gzip {{ exp.row(compressor=\"gzip\", modality=\"text\", subset=None).rate }} %"
        " on {{ exp.row(compressor='gzip', modality='image').chunks }} chunks ({{ exp.row(compressor='gzip', subset=...).chunks }}), gap\n"
        "{{ exp.row(compressor='gzip', subset='held out').rate -\n  exp.row(compressor='cm').rate | .1f }} points;"
        " {{ exp.meta.data['text'] }}; `{{ exp.meta.seconds }}` and {{...}} stay.\n"
        "```\n{{ exp.meta.seconds }}\n```\n"
    )
    assert hook.substitute(text, results) == (
        "took 325 s; gzip 47.76 % on 1,000 chunks (82), gap\n8.0 points; enwik8; `{{ exp.meta.seconds }}` and {{...}} stay.\n"
        "```\n{{ exp.meta.seconds }}\n```\n"
    )


@pytest.mark.parametrize("reference, complaint", [
    ("{{ exp.row(compressor='gzip').rate }}", "matches 3 rows"),
    ("{{ exp.row(compressor='zstd').rate }}", "matches 0 rows"),
    ("{{ exp.meta.minutes }}", "no 'minutes'"),
    ("{{ nosuch.meta.seconds }}", "no results file"),
    ("{{ exp.meta.data.text + 1 }}", "not a number"),
    ("{{ exp.meta.__class__ }}", "no '__class__'"),
    ("{{ exp.meta.seconds.__class__ }}", "no '__class__'"),
    ("{{ exp.rows.pop(0) }}", "only NAME.row"),
    ("{{ exp.meta }}", "not a figure"),
])
def test_a_wrong_results_reference_fails_the_build(results, reference, complaint):
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match=re.escape(complaint)):
        _hook("results").substitute("x\n" + reference, results, "page.md")
